"""E-MM1's rated triplets (``triplets.csv``) read straight into the trainer's triples table.

E-MM1:1M's ``triplets.csv`` (METHODS.md section 1) has one row per rating:
``encord_text_id, paired_modality, annotated_modality, encord_paired_id, encord_annotated_id,
annotation`` -- a caption, the item it was written for (its *paired* item), and a candidate
of another modality that annotators rated against the caption: 1 = good, 2 = partial, 3 = bad.

:func:`read_triplets` turns it into the table ``train.triples`` takes (``query_key, modality,
target_key, label``): each rating is a row ``(caption, annotated_modality, candidate, label)``,
and each distinct (caption, paired item) is a ``good`` row (the pair the source data made).
Ids become store keys through ``infos/<modality>.csv`` beside the file when it exists (its
``key`` column, as bindery's E-MM1 export writes, else ``file_name`` without its extension);
without infos an id is its own key. ``train.triples`` takes the file's path directly.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pyarrow as pa

from pipeline.core.manifest import ManifestError

log = logging.getLogger(__name__)

COLUMNS = ("encord_text_id", "paired_modality", "annotated_modality", "encord_paired_id", "encord_annotated_id",
           "annotation")
LABELS = {"1": "good", "2": "partial", "3": "bad"}


def is_triplets(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".csv"


def id_to_key(folder: Path, modality: str) -> dict[str, str] | None:
    """encord id -> store key from ``folder/infos/<modality>.csv``; None when there is none."""
    info = folder / "infos" / f"{modality}.csv"
    if not info.is_file():
        return None
    with info.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    column = f"encord_{modality}_id"
    if rows and column not in rows[0]:
        raise ManifestError(f"train.triples: {info} has no {column} column")
    return {r[column]: r.get("key") or Path(r.get("file_name") or r[column]).stem for r in rows}


def _check_header(path: Path, fieldnames: list[str] | None) -> None:
    missing = [c for c in COLUMNS if c not in (fieldnames or [])]
    if missing:
        raise ManifestError(f"train.triples: {path} lacks E-MM1 column(s) {missing}; a triplets.csv has "
                            f"{', '.join(COLUMNS)}")


def check_columns(path: str | Path) -> None:
    """The file exists and has E-MM1's columns (its header only is read)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"train.triples: {path} not found; give E-MM1's triplets.csv or set it to \"\"")
    with path.open(newline="", encoding="utf-8") as f:
        _check_header(path, csv.DictReader(f).fieldnames)


def read_triplets(path: str | Path) -> pa.Table:
    """The triples table (query_key, modality, target_key, label) of an E-MM1 ``triplets.csv``."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        _check_header(path, reader.fieldnames)
        rows = list(reader)
    maps: dict[str, dict[str, str] | None] = {}

    def key(modality: str, ident: str) -> str:
        if modality not in maps:
            maps[modality] = id_to_key(path.parent, modality)
        table = maps[modality]
        return ident if table is None else table.get(ident, f"<unknown {modality} id {ident}>")

    out: list[tuple[str, str, str, str]] = []
    paired: set[tuple[str, str, str]] = set()
    for n, r in enumerate(rows, 2):
        label = LABELS.get(r["annotation"].strip())
        if label is None:
            raise ManifestError(f"train.triples: {path} line {n}: annotation {r['annotation']!r} is not 1, 2 or 3")
        text = key("text", r["encord_text_id"])
        out.append((text, r["annotated_modality"], key(r["annotated_modality"], r["encord_annotated_id"]), label))
        pair = (text, r["paired_modality"], key(r["paired_modality"], r["encord_paired_id"]))
        if pair not in paired:
            paired.add(pair)
            out.append((*pair, "good"))
    log.info("E-MM1 triplets %s: %d ratings, %d caption pairs", path, len(rows), len(paired))
    cols = list(zip(*out, strict=True)) if out else [[], [], [], []]
    return pa.table({name: pa.array(list(c), pa.string())
                     for name, c in zip(("query_key", "modality", "target_key", "label"), cols, strict=True)})
