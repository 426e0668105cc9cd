"""`bindery eval`: Recall@K, zero-shot and EShot metrics of an exported run -> ``runs/<run>/metrics.json``.

Everything is computed in the anchor space from the exported heads (``pipeline.core.heads_file``),
so it measures exactly what a user of ``heads.safetensors`` gets.

* Recall@K for every ordered pair of modalities ``q->t`` (emergent pairs that never met in
  training, such as audio<->points, included): a query's truth is the ``t`` item with the same
  key (the same sample); the gallery is every ``t`` item of the split.
* Zero-shot: each item's label (``[eval] label_key`` of its sample json in ``metadata/``)
  against the class names embedded as text (``classes/text.parquet``); top-1 / top-5 accuracy.
* EShot ``q:c``: class vectors are the L2-normalised means of the labelled ``c`` items (training
  side of the split), queried by the held-out ``q`` items; top-1 / top-5 accuracy.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from pipeline.core.heads_file import HEADS_FILE, load_heads, project
from pipeline.core.manifest import Manifest, ManifestError
from pipeline.core.store import atomic_write_text, list_parts, read_part, read_store, stored_modalities
from trainer.data.rows import is_val

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"
CHUNK = 65536


def to_anchor_space(vectors: np.ndarray, head: torch.nn.Sequential | None) -> torch.Tensor:
    """Project (in chunks) through ``head`` or just L2-normalise when the modality is in the anchor space."""
    out = []
    for i in range(0, len(vectors), CHUNK):
        x = torch.from_numpy(np.array(vectors[i:i + CHUNK], dtype=np.float32))
        out.append(project(head, x) if head is not None else F.normalize(x, dim=-1))
    return torch.cat(out) if out else torch.zeros(0, 0)


def ranks_of_truth(queries: torch.Tensor, gallery: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``gallery[truth[i]]`` among all gallery items for query ``i`` (cosine)."""
    ranks = []
    for i in range(0, len(queries), 4096):
        sims = queries[i:i + 4096] @ gallery.T
        own = sims.gather(1, truth[i:i + 4096, None])
        ranks.append((sims > own).sum(1))
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def topk_accuracy(ranks: torch.Tensor, ks: tuple[int, ...], prefix: str = "R@") -> dict[str, float]:
    return {f"{prefix}{k}": float((ranks < k).float().mean()) if len(ranks) else float("nan") for k in ks}


def read_labels(output: Path, label_key: str) -> dict[str, str]:
    """key -> class name, from ``metadata/part-*.parquet`` json members that carry ``label_key``."""
    labels: dict[str, str] = {}
    for part in list_parts(output / "metadata"):
        table = pq.read_table(part, columns=["key", "json"])
        for key, text in zip(table.column("key").to_pylist(), table.column("json").to_pylist(), strict=True):
            try:
                value = json.loads(text).get(label_key) if text else None
            except (json.JSONDecodeError, AttributeError):
                value = None
            if value is not None:
                labels[key] = str(value)
    return labels


class Space:
    """Every evaluated modality's keys and anchor-space vectors, with the split flags."""

    def __init__(self, manifest: Manifest, run_dir: Path):
        heads, self.config = load_heads(run_dir)
        train = self.config.get("manifest", {}).get("train", {})
        self.anchor = self.config["anchor"]
        seed, frac = train.get("seed", manifest.train.seed), train.get("val_fraction", manifest.train.val_fraction)
        passthrough = train.get("anchor_passthrough", list(manifest.train.anchor_passthrough))
        stored = stored_modalities(manifest.output)
        self.mods = [m for m in [self.anchor, *passthrough, *heads] if m in stored]
        self.heads = heads
        self.keys: dict[str, np.ndarray] = {}
        self.vecs: dict[str, torch.Tensor] = {}
        self.val: dict[str, np.ndarray] = {}
        for m in self.mods:
            store = read_store(manifest.output, m)
            self.keys[m], self.vecs[m] = store.keys, to_anchor_space(store.vectors, heads.get(m))
            if len(self.vecs[m]) and self.vecs[m].shape[1] != self.vecs[self.anchor].shape[1]:
                raise ManifestError(f"train.anchor_passthrough: {m!r} is {store.dim}-d but the anchor "
                                    f"{self.anchor!r} is {self.vecs[self.anchor].shape[1]}-d; give {m!r} a head "
                                    "(list it in train.modalities) instead")
            self.val[m] = is_val(store.keys, seed, frac)

    def side(self, m: str, split: str, held_out: bool = True) -> np.ndarray:
        """Indices of ``m``'s items on the held-out side (or the training side) of the split."""
        if split == "all":
            return np.arange(len(self.keys[m]))
        return np.flatnonzero(self.val[m] if held_out else ~self.val[m])


def pair_items(space: Space, q: str, t: str, split: str) -> tuple[torch.Tensor, np.ndarray, torch.Tensor] | None:
    """Queries (rows of ``q``'s store that have a same-key ``t`` item in the split), the gallery
    (rows of ``t``'s store in the split) and each query's truth (its position in the gallery);
    None when no query has a partner."""
    qi, ti = space.side(q, split), space.side(t, split)
    pos = {k: j for j, k in enumerate(space.keys[t][ti])}
    pairs = [(i, pos[k]) for i, k in zip(qi, space.keys[q][qi], strict=True) if k in pos]
    if not pairs:
        return None
    qsel, truth = (torch.as_tensor(np.array(v, dtype=np.int64)) for v in zip(*pairs, strict=True))
    return qsel, ti, truth


def recall(space: Space, split: str, ks: tuple[int, ...],
           pairs: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Recall@K of ``pairs`` (default: every ordered pair of ``space.mods``) from ``space.vecs``."""
    out = {}
    for q, t in itertools.permutations(space.mods, 2) if pairs is None else pairs:
        if (items := pair_items(space, q, t, split)) is None:
            continue
        qsel, ti, truth = items
        ranks = ranks_of_truth(space.vecs[q][qsel], space.vecs[t][torch.as_tensor(ti)], truth)
        out[f"{q}->{t}"] = {**topk_accuracy(ranks, ks), "n": len(qsel)}
    return out


def classify(space: Space, m: str, idx: np.ndarray, labels: dict[str, str], names: list[str],
             class_vecs: torch.Tensor) -> dict[str, float]:
    """top-1 / top-5 accuracy of ``m``'s items ``idx`` against ``class_vecs`` (rows named ``names``)."""
    col = {n: j for j, n in enumerate(names)}
    items = [(i, col[labels[k]]) for i, k in zip(idx, space.keys[m][idx], strict=True) if labels.get(k) in col]
    if not items:
        return {}
    sel, truth = (torch.as_tensor(np.array(v, dtype=np.int64)) for v in zip(*items, strict=True))
    ranks = ranks_of_truth(space.vecs[m][sel], class_vecs, truth)
    return {**topk_accuracy(ranks, (1, 5), prefix="top"), "n": len(items), "classes": len(names)}


def zero_shot(space: Space, manifest: Manifest, labels: dict[str, str], split: str) -> dict[str, Any]:
    path = manifest.output / "classes" / "text.parquet"
    if not path.is_file() or not labels:
        log.info("zero-shot skipped: %s", "no labels in metadata/" if path.is_file() else f"no {path}")
        return {}
    if space.anchor != "text" and "text" not in space.heads and "text" not in space.mods:
        log.warning("zero-shot skipped: text is neither the anchor, a passthrough nor a projected modality")
        return {}
    classes = read_part(path)
    class_vecs = to_anchor_space(classes.vectors, space.heads.get("text"))
    names = [str(k) for k in classes.keys]
    return {m: r for m in space.mods if m != "text"
            if (r := classify(space, m, space.side(m, split), labels, names, class_vecs))}


def eshot(space: Space, pairs: tuple[str, ...], labels: dict[str, str], split: str) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        q, c = pair.split(":")
        if q not in space.mods or c not in space.mods:
            log.info("eshot %s skipped: %s not in the run's space", pair, q if q not in space.mods else c)
            continue
        src = space.side(c, split, held_out=False)
        by_class: dict[str, list[int]] = {}
        for i, k in zip(src, space.keys[c][src], strict=True):
            if k in labels:
                by_class.setdefault(labels[k], []).append(int(i))
        if not by_class:
            continue
        names = sorted(by_class)
        protos = F.normalize(torch.stack([space.vecs[c][by_class[n]].mean(0) for n in names]), dim=-1)
        if r := classify(space, q, space.side(q, split), labels, names, protos):
            out[pair] = r
    return out


def run(manifest: Manifest) -> dict[str, Any]:
    """Evaluate ``[eval] run`` (default ``[train] run``); write and return its metrics."""
    e = manifest.eval
    run_dir = manifest.output / "runs" / (e.run or manifest.train.run)
    if not (run_dir / HEADS_FILE).is_file():
        key = "eval.run" if e.run else "eval.run (empty, so train.run)"
        runs = sorted(p.parent.name for p in (manifest.output / "runs").glob(f"*/{HEADS_FILE}"))
        raise ManifestError(f"{key}: run {run_dir.name!r} has no exported heads ({run_dir / HEADS_FILE}); "
                            f"train it with `bindery train` or set eval.run to a trained run ({runs or 'none yet'})")
    space = Space(manifest, run_dir)
    labels = read_labels(manifest.output, e.label_key)
    metrics: dict[str, Any] = recall(space, e.split, e.ks)
    metrics["zero_shot"] = zero_shot(space, manifest, labels, e.split)
    metrics["eshot"] = eshot(space, e.eshot, labels, e.split)
    from trainer.eval.baselines import baselines  # it builds on this module, so it is imported here

    metrics["baselines"] = baselines(manifest, space, e.split, e.ks, e.ridge_lambda)
    atomic_write_text(run_dir / METRICS_FILE, json.dumps(metrics, indent=2))  # readers never see half a file
    log.info("metrics of %s written to %s", run_dir.name, run_dir / METRICS_FILE)
    return metrics

