"""The trainer's dataset: cached vectors joined into training rows, and nothing else.

A *row* is one anchor item (usually a caption) plus, per projected modality ``m``, the index
of its partner in ``m``'s store (or -1 when the row has none), a weight, and optionally an
explicit bad partner (a human-rated hard negative). Rows come from three sources:

* ``pairs/quintuples.parquet``: ``query_key`` in the anchor store, ``<m>_key`` in ``m``'s store;
* captions: an item whose own key is also in the anchor store (same ``__key__`` = same sample);
* a human-rated triples table ``query_key, modality, target_key, label`` (good | partial | bad), or
  E-MM1's ``triplets.csv`` read into one (:mod:`trainer.data.emm1`).

The store vectors are kept once per modality and rows hold indices, so a batch is an index
gather: from whole tensors on the accelerator (or in host memory on a CPU run) when the stores
fit the memory budget, or, in stream mode, from memory-mapped Parquet parts through a bounded
row-group cache (:mod:`trainer.data.stream`); both give the same batches. This module never imports
webdataset, a decoder or an encoder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import TrainConfig
from pipeline.core.split import is_val
from pipeline.core.store import read_store, stored_modalities
from trainer.batch import Batch, ModalityBatch
from trainer.data import emm1
from trainer.data.stream import MappedStore, store_nbytes

log = logging.getLogger(__name__)

TRIPLE_LABELS = ("good", "partial", "bad")
TRIPLE_COLUMNS = ("query_key", "modality", "target_key", "label")


def key_index(store_keys: np.ndarray, wanted: list | np.ndarray | pa.Array) -> np.ndarray:
    """Row of each wanted key in a store (-1 where absent or null), vectorised through Arrow."""
    idx = pc.index_in(pa.array(wanted, type=pa.string()), value_set=pa.array(store_keys, type=pa.string()))
    return idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def projected_modalities(train: TrainConfig, stored: list[str]) -> list[str]:
    """Modalities that get a head: the configured ones, or every stored one but the anchor and passthroughs
    (:func:`trainer.checks.check_train` has made sure configured ones are stored and not the anchor)."""
    return list(train.modalities) or [m for m in stored if m != train.anchor and m not in train.anchor_passthrough]


@dataclass
class Rows:
    """Index table of training rows (numpy, host side)."""

    anchor: np.ndarray  # (n,) row in the anchor store
    partner: dict[str, np.ndarray]  # m -> (n,) row in m's store, -1 = none
    weight: dict[str, np.ndarray]  # m -> (n,) float32 loss weight of the (anchor, partner) pair
    bad: dict[str, np.ndarray]  # m -> (n,) row of an explicit bad partner, -1 = none

    def __len__(self) -> int:
        return len(self.anchor)

    def take(self, sel: np.ndarray) -> Rows:
        return Rows(self.anchor[sel], {m: v[sel] for m, v in self.partner.items()},
                    {m: v[sel] for m, v in self.weight.items()}, {m: v[sel] for m, v in self.bad.items()})

    @staticmethod
    def concat(parts: list[Rows], mods: list[str]) -> Rows:
        return Rows(np.concatenate([p.anchor for p in parts]),
                    {m: np.concatenate([p.partner[m] for p in parts]) for m in mods},
                    {m: np.concatenate([p.weight[m] for p in parts]) for m in mods},
                    {m: np.concatenate([p.bad[m] for p in parts]) for m in mods})


def _rows(anchor: np.ndarray, mods: list[str], partner: dict[str, np.ndarray] | None = None) -> Rows:
    n = len(anchor)
    partner = {m: (partner or {}).get(m, np.full(n, -1, np.int64)) for m in mods}
    return Rows(anchor, partner, {m: np.ones(n, np.float32) for m in mods},
                {m: np.full(n, -1, np.int64) for m in mods})


def quintuple_rows(path: Path, anchor_keys: np.ndarray, stores_keys: dict[str, np.ndarray],
                   own_known: bool = False) -> Rows:
    """One row per quintuple whose query is in the anchor store and that keeps a partner; missing
    partners stay -1. With ``own_known`` (the caption rows are trained on too), a partner in a modality
    where the query's own sample has an item is dropped: the caption row already carries the truth
    there, and the auto-pair can only repeat or contradict it."""
    table = pq.read_table(path)
    queries = table.column("query_key").combine_chunks()
    anchor = key_index(anchor_keys, queries)
    partner = {m: key_index(keys, table.column(f"{m}_key").combine_chunks())
               if f"{m}_key" in table.column_names else np.full(len(anchor), -1, np.int64)
               for m, keys in stores_keys.items()}
    if own_known:
        for m, keys in stores_keys.items():
            partner[m][key_index(keys, queries) >= 0] = -1
    rows = _rows(anchor, list(stores_keys), partner)
    has_any = np.zeros(len(anchor), bool)
    for p in partner.values():
        has_any |= p >= 0
    return rows.take((anchor >= 0) & has_any)


def caption_rows(anchor_keys: np.ndarray, stores_keys: dict[str, np.ndarray]) -> Rows:
    """One row per anchor item whose key is also in some projected store (the same sample)."""
    partner = {m: key_index(keys, anchor_keys) for m, keys in stores_keys.items()}
    rows = _rows(np.arange(len(anchor_keys)), list(stores_keys), partner)
    has_any = np.zeros(len(anchor_keys), bool)
    for p in partner.values():
        has_any |= p >= 0
    return rows.take(has_any)


def triple_rows(path: str | pa.Table, anchor_keys: np.ndarray, stores_keys: dict[str, np.ndarray],
                partial: str, partial_weight: float) -> Rows:
    """Human-rated triples: good = positive row; partial = dropped or a row weighted ``partial_weight``;
    bad = the explicit hard negative (in the denominator) of the query's good/partial row in that
    modality; a bad rating with no positive row for its query has nothing to push against and is unused."""
    # a table: E-MM1's triplets.csv already read (trainer.data.emm1)
    table = path if isinstance(path, pa.Table) else pq.read_table(path, columns=list(TRIPLE_COLUMNS))
    q, mod = table.column("query_key").to_pylist(), table.column("modality").to_pylist()
    tgt, lab = table.column("target_key").to_pylist(), table.column("label").to_pylist()
    mods = list(stores_keys)
    bad_of: dict[tuple[str, str], str] = {}
    pos: list[tuple[str, str, str, float]] = []
    for qk, m, tk, label in zip(q, mod, tgt, lab, strict=True):
        if m not in stores_keys or label not in TRIPLE_LABELS:
            log.warning("triples: skipping row (%s, %s, %s, %s): unknown modality or label", qk, m, tk, label)
            continue
        if label == "bad":
            bad_of[(qk, m)] = tk
        elif label == "good" or partial == "soft":
            pos.append((qk, m, tk, 1.0 if label == "good" else partial_weight))
    anchor = key_index(anchor_keys, [p[0] for p in pos])
    rows = _rows(anchor, mods)
    for m in mods:
        sel = np.array([p[1] == m for p in pos], dtype=bool)
        if sel.any():
            rows.partner[m][sel] = key_index(stores_keys[m], [p[2] for p, s in zip(pos, sel, strict=True) if s])
            rows.weight[m][sel] = np.array([p[3] for p, s in zip(pos, sel, strict=True) if s], np.float32)
            bads = [bad_of.get((p[0], m)) for p, s in zip(pos, sel, strict=True) if s]
            rows.bad[m][sel] = key_index(stores_keys[m], bads)
    keep = anchor >= 0
    keep &= np.any([rows.partner[m] >= 0 for m in mods], axis=0) if mods else keep
    return rows.take(keep)


def split_rows(rows: Rows, keys: dict[str, np.ndarray], anchor: str, seed: int, fraction: float) -> np.ndarray:
    """Held-out flag per row (its anchor key's side of :func:`is_val`), masking in place every partner
    and rated bad partner whose own key sits on the other side (set to -1): evaluate splits each store
    by its own keys, so no held-out item of any modality is seen in training, nor a training item in
    a held-out row."""
    val = is_val(keys[anchor][rows.anchor], seed, fraction)
    masked = 0
    for m in rows.partner:
        for col in (rows.partner[m], rows.bad[m]):
            used = np.flatnonzero(col >= 0)
            if not len(used):
                continue
            items, inverse = np.unique(col[used], return_inverse=True)  # each store key hashed once
            other = used[is_val(keys[m][items], seed, fraction)[inverse] != val[used]]
            col[other] = -1
            masked += len(other)
    if masked:
        log.info("train data: %d partner(s) on the other side of the held-out split masked", masked)
    return val


@dataclass
class CachedData:
    """Store vectors (one tensor per modality) + training rows + the held-out split."""

    anchor: str
    modalities: list[str]  # projected modalities, in head order
    vectors: dict[str, torch.Tensor | MappedStore]  # modality (anchor included) -> (n_m, dim), the stored dtype
    keys: dict[str, np.ndarray]  # modality -> store keys
    rows: Rows
    train_idx: np.ndarray  # rows used for training
    val_idx: np.ndarray  # held-out rows
    device: torch.device  # where ``vectors`` live (the host in stream mode: batches are gathered there)

    @property
    def streaming(self) -> bool:
        return any(isinstance(v, MappedStore) for v in self.vectors.values())

    def dims(self) -> dict[str, int]:
        return {m: int(v.shape[1]) for m, v in self.vectors.items()}

    def batch(self, row_idx: torch.Tensor, target: torch.device) -> Batch:
        """Gather the rows ``row_idx`` (an index tensor) into a :class:`~trainer.batch.Batch` on ``target``:
        the anchor vectors, and per projected modality its partners (zeros where absent), mask and weight,
        and, when the rows hold rated bad partners, those (zeros where none) and their mask."""
        idx = row_idx.to(self.device)
        anchor = self.vectors[self.anchor][self._t("anchor")[idx]].float()
        sides = {}
        for m in self.modalities:
            vectors, mask = self._gather(m, self._t("partner", m)[idx])
            bad, bad_mask = self._gather(m, self._t("bad", m)[idx]) if self.has_bad(m) else (None, None)
            sides[m] = ModalityBatch(vectors, mask, self._t("weight", m)[idx], bad, bad_mask)
        return Batch(anchor, sides).to(target)

    def _gather(self, m: str, j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``j`` of ``m``'s store as float32 (zeros where ``j`` is -1) and the mask ``j >= 0``."""
        ok = j >= 0
        return self.vectors[m][j.clamp(min=0)].float() * ok[:, None], ok

    def _columns(self) -> list[tuple[str, str, str | None]]:
        """(store, row-table column, its modality) triples a batch gathers from."""
        bad = [(m, "bad", m) for m in self.modalities if self.has_bad(m)]
        return [(self.anchor, "anchor", None), *[(m, "partner", m) for m in self.modalities], *bad]

    def window_steps(self, batch_size: int) -> int:
        """Stream mode: how many steps of ``batch_size`` rows one :meth:`prefetch` covers so that every
        store's window fits its share of the budget; 0 when even one step does not (or not streaming)."""
        if not self.streaming:
            return 0
        cols = {m: sum(store == m for store, _, _ in self._columns()) for m in self.vectors}
        return min(v.budget // (batch_size * cols[m] * v.dim * v.np_dtype.itemsize) for m, v in self.vectors.items())

    def prefetch(self, row_idx: torch.Tensor) -> None:
        """Stream mode: read the store rows that the training rows ``row_idx`` (the coming steps'
        rows) need into each store's window buffer, every row group decoded once per window; a no-op
        for whole tensors. Batches are the same with or without it, only faster."""
        if not self.streaming:
            return
        idx = row_idx.reshape(-1).cpu()
        need: dict[str, list[np.ndarray]] = {m: [] for m in self.vectors}
        for m, col, of in self._columns():
            need[m].append(self._t(col, of)[idx].clamp(min=0).numpy())  # batch() reads row 0 for absent partners
        for m, parts in need.items():
            self.vectors[m].prefetch(np.concatenate(parts))

    def has_bad(self, modality: str) -> bool:
        cache = self.__dict__.setdefault("_has_bad", {})
        if modality not in cache:
            cache[modality] = bool((self.rows.bad[modality] >= 0).any())
        return cache[modality]

    def _t(self, column: str, modality: str | None = None) -> torch.Tensor:
        """A row-table column (``anchor``, or ``partner``/``weight``/``bad`` of ``modality``) as a tensor
        on the vectors' device, built once."""
        cache = self.__dict__.setdefault("_tensors", {})
        if (column, modality) not in cache:
            arr = self.rows.anchor if column == "anchor" else getattr(self.rows, column)[modality]
            cache[column, modality] = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)
        return cache[column, modality]


GPU_FRACTION = 0.6  # memory_gb = 0 on CUDA: the stores may take this share of free GPU memory
RAM_FRACTION = 0.5  # memory_gb = 0 otherwise (and for the stream cache): this share of available RAM


def memory_budget(memory_gb: float, device: torch.device, host: bool = False) -> int:
    """Bytes the vectors may take: ``memory_gb`` when set; else 60 % of the free memory of a CUDA
    ``device`` (``host=False``), or 50 % of the available RAM (a CPU device, or ``host=True``)."""
    if memory_gb > 0:
        return int(memory_gb * 2**30)
    if device.type == "cuda" and not host:
        free, _total = torch.cuda.mem_get_info(device)
        return int(GPU_FRACTION * free)
    import psutil

    return int(RAM_FRACTION * psutil.virtual_memory().available)


def choose_device(mode: str, nbytes: int, device: torch.device, budget: int) -> torch.device | None:
    """Where the stores live: a device for whole tensors, or ``None`` to stream them.

    ``gpu``: whole tensors on ``device`` (host memory on a CPU run); ``stream``: stream;
    ``auto``: whole tensors on ``device`` when ``nbytes`` fits ``budget``, else stream."""
    if mode == "stream" or (mode == "auto" and nbytes > budget):
        where = None
    else:
        where = device if device.type == "cuda" else torch.device("cpu")
    log.info("train data: in_memory=%s, stores %.1f MB, budget %.1f MB -> %s", mode, nbytes / 1e6, budget / 1e6,
             f"whole tensors on {where}" if where is not None else "stream from memory-mapped Parquet")
    return where


def load_vectors(train: TrainConfig, layout: OutputLayout, modalities: list[str], device: torch.device
                 ) -> tuple[dict[str, torch.Tensor | MappedStore], dict[str, np.ndarray], torch.device | None]:
    """Every store of ``modalities`` as whole tensors (on the device :func:`choose_device` picks) or as
    :class:`MappedStore` s sharing the host budget in proportion to their size; their keys; where they live
    (``None`` = streamed)."""
    sizes = {m: store_nbytes(layout, m) for m in modalities}
    nbytes = sum(sizes.values())
    where = choose_device(train.in_memory, nbytes, device, memory_budget(train.memory_gb, device))
    if where is None:
        cache = memory_budget(train.memory_gb, device, host=True)
        mapped = {m: MappedStore(layout, m, cache * size // max(1, nbytes)) for m, size in sizes.items()}
        return dict(mapped), {m: v.read_keys() for m, v in mapped.items()}, None
    stores = {m: read_store(layout.root, m) for m in sizes}
    # kept in the stored dtype (float16 halves the footprint at EBind's scale); batches are cast to float32
    vectors = {m: torch.from_numpy(np.array(s.vectors)).to(where) for m, s in stores.items()}
    return dict(vectors), {m: s.keys for m, s in stores.items()}, where


def join_rows(train: TrainConfig, layout: OutputLayout, keys: dict[str, np.ndarray], mods: list[str]) -> list[Rows]:
    """The row sources ``[train]`` enables (captions, quintuples, rated triples), each joined to the stores' keys."""
    anchor_keys, proj_keys = keys[train.anchor], {m: keys[m] for m in mods}
    parts = []
    if train.use_captions:
        parts.append(caption_rows(anchor_keys, proj_keys))
    if train.use_quintuples and layout.pairs.quintuples.is_file():
        parts.append(quintuple_rows(layout.pairs.quintuples, anchor_keys, proj_keys, own_known=train.use_captions))
    if train.triples:
        triples = emm1.read_triplets(train.triples) if emm1.is_triplets(train.triples) else train.triples
        parts.append(triple_rows(triples, anchor_keys, proj_keys, train.partial, train.partial_weight))
    return parts


def load(train: TrainConfig, layout: OutputLayout, device: torch.device | str = "cpu") -> CachedData:
    """Read the stores and pair tables ``[train]`` names into a :class:`CachedData` (checked first by
    :func:`trainer.checks.check_train`; an empty row table is left to :func:`trainer.checks.check_rows`)."""
    mods = projected_modalities(train, stored_modalities(layout.root))
    vectors, keys, where = load_vectors(train, layout, [train.anchor, *mods], torch.device(device))
    parts = join_rows(train, layout, keys, mods)
    rows = Rows.concat(parts, mods) if parts else _rows(np.zeros(0, np.int64), mods)
    val = split_rows(rows, keys, train.anchor, train.seed, train.val_fraction)
    nbytes = sum(int(v.nbytes) for v in vectors.values())
    log.info("train data: %d rows (%d held out) from %d parts, stores %s (%.1f MB)", len(rows), int(val.sum()),
             len(parts), f"on {where}" if where is not None else "streamed from memory-mapped Parquet", nbytes / 1e6)
    where = torch.device("cpu") if where is None else where  # stream: batches are gathered on the host
    return CachedData(train.anchor, mods, vectors, keys, rows, np.flatnonzero(~val), np.flatnonzero(val), where)
