"""``train.bridge``: the training rows of a BrokenBind run, built from a ``bindery bridge`` output.

One row per training item of the bridge (evaluation items never appear: they are in neither set):

* a D1 row: anchor = the item's pivot, ``a`` = its real ``a`` (mask on), ``c`` = its pseudo ``c``;
* a D2 row: anchor = the item's pivot, ``c`` = its real ``c`` (mask on), ``a`` = its pseudo ``a``.

A modality's mask says, as everywhere in the trainer, that the row has a *real* partner there, so
the pivot terms of :class:`~trainer.losses.infonce.BindLoss` see real partners only ("each
modality against the pivot, as today"). Where the mask is off, a bridge batch carries the pseudo
partner instead of zeros: the heads project it and :class:`~trainer.bridge.loss.BridgeLoss` pairs
it with the row's real partner. With ``pseudo=False`` (the emergent route) the rows are the same
and the off-mask slots stay zeros, exactly the rows an ordinary run would build from these items.

The held-out split (``train.val_fraction``) is applied as in every run, by the row's key. The
stores are loaded whole (``in_memory = "stream"`` is refused).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import ManifestError, TrainConfig
from pipeline.core.store import read_store, store_fingerprint
from trainer.batch import Batch
from trainer.bridge.splits import BridgeSplit, load_split
from trainer.data.rows import CachedData, Rows, is_val, key_index

log = logging.getLogger(__name__)


@dataclass
class BridgeData(CachedData):
    """:class:`CachedData` whose rows also point at pseudo partners (``pseudo_index[m]``, -1 = none)."""

    pseudo_vectors: dict[str, torch.Tensor] = field(default_factory=dict)  # m -> bridge store of pseudo m
    pseudo_index: dict[str, np.ndarray] = field(default_factory=dict)  # m -> (rows,) row in pseudo_vectors[m]
    split: BridgeSplit | None = None
    bridge_signature: str = ""  # the bridge's config.json and pseudo stores' fingerprints, as JSON

    def batch(self, row_idx: torch.Tensor, target: torch.device) -> Batch:
        """The ordinary batch, with each off-mask slot holding the row's pseudo partner (if any)."""
        out = super().batch(row_idx, target)
        idx = row_idx.to(self.device)
        sides = dict(out.modalities)
        for m, vectors in self.pseudo_vectors.items():
            j = self._pseudo(m)[idx]
            ok = (j >= 0)[:, None]
            pseudo = (vectors[j.clamp(min=0)].float() * ok).to(target, non_blocking=True)
            sides[m] = sides[m].replace(vectors=torch.where(ok.to(target), pseudo, sides[m].vectors))
        return Batch(out.anchor, sides)

    def _pseudo(self, m: str) -> torch.Tensor:
        cache = self.__dict__.setdefault("_pseudo_t", {})
        if m not in cache:
            cache[m] = torch.from_numpy(np.ascontiguousarray(self.pseudo_index[m])).to(self.device)
        return cache[m]

    def fingerprint(self) -> bytes:
        """What a checkpoint of this run must also match: the bridge it was made from (its config, which
        records the time it took, and its stores' parts), so a rerun bridge retrains from scratch."""
        return self.bridge_signature.encode()


def read_bridge_config(layout: OutputLayout, name: str) -> dict[str, Any]:
    path = layout.bridge(name).derived_config
    if not path.is_file():
        raise ManifestError(f"train.bridge: {name!r} has no finished bridge ({path} is missing); run "
                            f"`bindery bridge` with bridge.name = {name!r} first, or set train.bridge = \"\"")
    return json.loads(path.read_text())


def check_bridge(t: TrainConfig, layout: OutputLayout, config: dict[str, Any]) -> tuple[str, str, str]:
    """``(pivot, a, c)`` of the bridge, after checking it fits ``[train]`` and the current stores."""
    pivot, (a, c) = config["pivot"], config["modalities"]
    if t.anchor != pivot:
        raise ManifestError(f"train.anchor: {t.anchor!r}, but bridge {t.bridge!r} goes through the pivot {pivot!r}; "
                            f"set train.anchor = {pivot!r}")
    if t.modalities and set(t.modalities) != {a, c}:
        raise ManifestError(f"train.modalities: a bridge run trains the heads of {a!r} and {c!r} only; set "
                            f"train.modalities = [\"{a}\", \"{c}\"] or leave it empty")
    if t.in_memory == "stream":
        raise ManifestError("train.in_memory: a bridge run loads its stores whole; set it to \"auto\" or \"gpu\"")
    for m, recorded in config["stores"].items():
        if store_fingerprint(layout.root, m) != recorded:
            raise ManifestError(f"train.bridge: the {m!r} store changed since bridge {t.bridge!r} was made; "
                                "rerun `bindery bridge`")
    return pivot, a, c


def bridge_rows(split: BridgeSplit, keys: dict[str, np.ndarray], pseudo_keys: dict[str, np.ndarray]
                ) -> tuple[Rows, dict[str, np.ndarray], np.ndarray]:
    """D1 rows then D2 rows: ``(rows, pseudo_index, row keys)``."""
    a, c = split.a, split.c
    n1, n2 = len(split.d1), len(split.d2)
    none1, none2 = np.full(n1, -1, np.int64), np.full(n2, -1, np.int64)
    anchor = np.concatenate([key_index(keys[split.pivot], split.d1), key_index(keys[split.pivot], split.d2)])
    partner = {a: np.concatenate([key_index(keys[a], split.d1), none2]),
               c: np.concatenate([none1, key_index(keys[c], split.d2)])}
    pseudo = {c: np.concatenate([key_index(pseudo_keys[c], split.d1), none2]),
              a: np.concatenate([none1, key_index(pseudo_keys[a], split.d2)])}
    n = n1 + n2
    rows = Rows(anchor, partner, {m: np.ones(n, np.float32) for m in (a, c)},
                {m: np.full(n, -1, np.int64) for m in (a, c)})
    return rows, pseudo, split.training_keys()


def load_bridge(t: TrainConfig, layout: OutputLayout, device: torch.device | str = "cpu",
                pseudo: bool = True) -> BridgeData:
    """The rows and vectors of a ``train.bridge`` run (``pseudo=False``: the emergent route's)."""
    config = read_bridge_config(layout, t.bridge)
    pivot, a, c = check_bridge(t, layout, config)
    split = load_split(layout.root, pivot, a, c)
    if split.sizes() != config["sizes"]:  # pragma: no cover - caught by the store fingerprints first
        raise ManifestError(f"train.bridge: the split changed since bridge {t.bridge!r} was made; rerun `bindery bridge`")
    dev = torch.device(device)
    where = dev if dev.type == "cuda" else torch.device("cpu")
    stores = {m: read_store(layout.root, m) for m in (pivot, a, c)}
    bridge = layout.bridge(t.bridge).root
    made = {m: read_store(bridge, m) for m in (a, c)}
    rows, pseudo_index, row_keys = bridge_rows(split, {m: s.keys for m, s in stores.items()},
                                               {m: s.keys for m, s in made.items()})
    val = is_val(row_keys, t.seed, t.val_fraction)
    mods = list(t.modalities or (a, c))
    log.info("bridge rows: D1 %d, D2 %d (%d held out), %s partners", len(split.d1), len(split.d2), int(val.sum()),
             "real + pseudo" if pseudo else "real only (emergent route)")
    data = BridgeData(pivot, mods, {m: torch.from_numpy(np.array(s.vectors)).to(where) for m, s in stores.items()},
                      {m: s.keys for m, s in stores.items()}, rows, np.flatnonzero(~val), np.flatnonzero(val), where,
                      split=split)
    data.bridge_signature = json.dumps({"config": config, "pseudo": pseudo,
                                        "stores": {m: store_fingerprint(bridge, m) for m in made}}, sort_keys=True)
    if pseudo:
        data.pseudo_vectors = {m: torch.from_numpy(np.array(s.vectors)).to(where) for m, s in made.items()}
        data.pseudo_index = pseudo_index
    return data
