"""The pairs in E-MM1's table layout (``[publish] emm1 = true``), beside the bundle's own tables.

E-MM1 (Encord's dataset behind EBind) publishes its automatic groups as

* ``nn_<k>/data_groups.csv`` for k = 1..16 -- one row per caption: ``encord_text_id,
  encord_video_id, encord_audio_id, encord_image_id, encord_points_id, nn_index``, the ids
  of the caption's k-th nearest neighbour in each modality (``nn_index = k``);
* ``infos/<modality>.csv`` -- ``encord_<modality>_id`` plus where the item lives
  (``save_folder``, ``file_name``).

bindery writes the same from ``pairs/neighbors.parquet`` (``rank`` 0 is ``nn_1``): ids are
the row numbers of each modality's keys in sorted order; ``save_folder`` is the shard the
item came from and ``file_name`` its sample key (the WebDataset ``__key__``), also given as
``key``. A modality with no k-th neighbour leaves its cell empty. Captions are the queries,
so this needs ``pair.query = "text"``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.core.layout import BundleLayout, OutputLayout
from pipeline.core.manifest import ManifestError
from pipeline.core.store import list_parts, read_metadata

log = logging.getLogger(__name__)
GROUP_MODALITIES = ("video", "audio", "image", "points")  # E-MM1's column order after encord_text_id


def id_column(modality: str) -> str:
    return f"encord_{modality}_id"


def _infos(layout: OutputLayout, modality: str) -> pa.Table:
    """Sorted keys with their id, shard (save_folder) and file name (the key)."""
    keys, shards = [], []
    for part in list_parts(layout.embeddings(modality)):
        part_keys = pq.read_table(part, columns=["key"]).column("key").to_pylist()
        keys += part_keys
        shards += [str(read_metadata(part).get("shard", part.stem.removeprefix("part-")))] * len(part_keys)
    order = np.argsort(np.asarray(keys, dtype=object), kind="stable") if keys else np.zeros(0, np.int64)
    sorted_keys = [keys[i] for i in order]
    return pa.table({id_column(modality): pa.array(np.arange(len(keys)), pa.int64()),
                     "save_folder": pa.array([shards[i] for i in order], pa.string()),
                     "file_name": pa.array(sorted_keys, pa.string()), "key": pa.array(sorted_keys, pa.string())})


def _ids(infos: pa.Table, modality: str, keys: pa.Array) -> pa.Array:
    """encord ids of ``keys`` (null where a key is not in the store)."""
    pos = pc.index_in(keys, value_set=infos.column("key"))
    return pc.take(infos.column(id_column(modality)), pos)


def groups_table(neighbors: pa.Table, infos: dict[str, pa.Table], k: int) -> pa.Table:
    """``nn_<k>/data_groups.csv``'s rows: each caption's k-th neighbour per modality."""
    at_k = neighbors.filter(pc.equal(neighbors.column("rank"), k - 1))
    queries = pc.unique(at_k.column("query_key"))
    queries = pc.take(queries, pc.sort_indices(queries))
    cols = {id_column("text"): _ids(infos["text"], "text", queries)}
    for m in GROUP_MODALITIES:
        sub = at_k.filter(pc.equal(at_k.column("modality"), m))
        if m not in infos or not len(sub):
            cols[id_column(m)] = pa.nulls(len(queries), pa.int64())
            continue
        row = pc.index_in(queries, value_set=sub.column("query_key"))
        cols[id_column(m)] = pc.take(_ids(infos[m], m, sub.column("target_key")), row)
    cols["nn_index"] = pa.array(np.full(len(queries), k, np.int64))
    return pa.table(cols)


def write_emm1(layout: OutputLayout, root: Path, query: str) -> dict[str, Any]:
    """Write E-MM1's tables under ``root`` (the bundle being built); ``query`` is ``pair.query`` (the
    neighbours table's own ``query`` metadata wins); return what bundle.json records."""
    neighbors_path = layout.pairs.neighbors
    if not neighbors_path.is_file():
        raise ManifestError(f"publish.emm1: {neighbors_path} not found; run `bindery pair` first or set "
                            "publish.emm1 = false")
    neighbors = pq.read_table(neighbors_path, columns=["query_key", "modality", "rank", "target_key"])
    query = read_metadata(neighbors_path).get("query", query)
    if query != "text":
        raise ManifestError(f"publish.emm1: E-MM1 groups are keyed by captions but the pairs' queries are "
                            f"{query!r}; pair with pair.query = \"text\" or set publish.emm1 = false")
    stored = [m for m in ("text", *GROUP_MODALITIES) if list_parts(layout.embeddings(m))]
    infos = {m: _infos(layout, m) for m in stored}
    for m, table in infos.items():
        path = root / BundleLayout.emm1_info(m)
        path.parent.mkdir(parents=True, exist_ok=True)
        pacsv.write_csv(table, path)
    ranks = pc.unique(neighbors.column("rank")).to_pylist()
    ks = sorted(int(r) + 1 for r in ranks)
    for k in ks:
        path = root / BundleLayout.emm1_groups(k)
        path.parent.mkdir(parents=True, exist_ok=True)
        pacsv.write_csv(groups_table(neighbors, infos, k), path)
    log.info("E-MM1 layout: infos for %s, nn_1..nn_%d", ", ".join(infos), max(ks, default=0))
    return {"folder": BundleLayout.EMM1, "k": ks, "infos": sorted(infos)}
