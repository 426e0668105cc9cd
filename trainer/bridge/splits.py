"""Which keys form D1, D2 and the evaluation items (METHODS.md section 4).

In bindery both sets live in one output's stores; an item's set follows from the modalities its
key has (the same ``__key__`` = the same sample):

* **D1** = keys with ``a`` and the pivot and no ``c``;
* **D2** = keys with ``c`` and the pivot and no ``a``;
* **evaluation items** = keys with both ``a`` and ``c`` (pivot or not). They are never used by
  ``bindery bridge`` or ``bindery train``, neither as D1 nor D2 nor as pivot partners, so what they
  measure is a binding between modalities that never met.

D1 and D2 are disjoint by construction, and neither meets the evaluation items.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import BridgeConfig, ManifestError
from pipeline.core.store import list_parts


@dataclass(frozen=True)
class BridgeSplit:
    pivot: str
    a: str  # the first modality of bridge.modalities
    c: str  # the second
    d1: np.ndarray  # sorted keys: a + pivot, no c
    d2: np.ndarray  # sorted keys: c + pivot, no a
    evaluation: np.ndarray  # sorted keys: a + c

    def sizes(self) -> dict[str, int]:
        return {"d1": len(self.d1), "d2": len(self.d2), "evaluation": len(self.evaluation)}

    def training_keys(self) -> np.ndarray:
        return np.concatenate([self.d1, self.d2])


def store_keys(output: str | Path, modality: str) -> np.ndarray:
    """Every key of a modality's store (the key column only)."""
    parts = list_parts(OutputLayout(output).embeddings(modality))
    if not parts:
        return np.zeros(0, dtype=object)
    keys = pa.concat_arrays([pq.read_table(p, columns=["key"]).column("key").combine_chunks() for p in parts])
    return np.asarray(keys.to_pylist(), dtype=object)


def split_keys(keys: dict[str, np.ndarray], pivot: str, a: str, c: str) -> BridgeSplit:
    """The three key sets from each modality's store keys."""
    sets = {m: set(keys[m].tolist()) for m in (pivot, a, c)}

    def ordered(s: set) -> np.ndarray:
        return np.asarray(sorted(s), dtype=object)

    return BridgeSplit(pivot, a, c, ordered((sets[a] & sets[pivot]) - sets[c]),
                       ordered((sets[c] & sets[pivot]) - sets[a]), ordered(sets[a] & sets[c]))


def bridge_modalities(b: BridgeConfig) -> tuple[str, str]:
    """``(a, c)`` from ``[bridge] modalities`` (its shape is checked with the manifest; here: not empty)."""
    if not b.modalities:
        raise ManifestError("bridge.modalities: empty; name the two modalities to bind, which never share an item, "
                            "e.g. modalities = [\"image\", \"audio\"]")
    return b.modalities[0], b.modalities[1]


def load_split(output: str | Path, pivot: str, a: str, c: str) -> BridgeSplit:
    """The split of an output's stores; a ManifestError names a missing store or an empty set."""
    keys = {}
    for m in (pivot, a, c):
        keys[m] = store_keys(output, m)
        if not len(keys[m]):
            raise ManifestError(f"bridge.modalities / bridge.pivot: no embedding store for {m!r} under "
                                f"{OutputLayout(output).embeddings(m)}; run `bindery precompute` for it")
    split = split_keys(keys, pivot, a, c)
    for name, label in (("d1", f"{a} + {pivot} without {c}"), ("d2", f"{c} + {pivot} without {a}")):
        if not len(getattr(split, name)):
            raise ManifestError(f"bridge.modalities: no item has {label} (set {name.upper()}), so there is nothing "
                                "to bridge through; check the stores or the modalities")
    return split
