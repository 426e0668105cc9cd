"""The ``bridge`` section of a bridge run's ``metrics.json``: ``a <-> c`` over the evaluation items.

The evaluation items are the keys that have both ``a`` and ``c`` (:mod:`~trainer.bridge.splits`);
bridge and train never used them. Every method is scored on the same items, gallery = all of them:

* ``mox``: the run's heads (trained with the pseudo partners), both sides in the pivot's space;
* ``emergent``: the heads of ``runs/<run>-emergent/`` (pivot terms only, the same rows);
* ``ridge``: the closed-form composition ``a -> p -> c`` (``W_{a->p}`` fitted on D1, ``W_{p->c}`` on
  D2, float64 ridge with a free bias, lambda as ``bridge.ridge_lambda``: 0 = k-fold CV), the mapped
  queries compared with the real target vectors (and ``c -> p -> a`` the other way);
* ``chance``: ``R@K = K / N``; EShot ``top-k = k / classes``.

Per method and direction: R@1/5/10 (a query's truth is the same key's item) and EShot top-1/top-5:
a class vector is ``unit(mean)`` of the class's target-side vectors among the evaluation items,
leaving out the query's own partner (so an item never finds its class through itself); queries
whose class has no other item are skipped (``n`` counts the rest).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.heads_file import load_heads
from pipeline.core.layout import RunLayout
from pipeline.core.manifest import Manifest
from pipeline.core.samples import sample_labels
from pipeline.core.store import read_store
from trainer.bridge.data import read_bridge_config
from trainer.bridge.hooks import emergent_run
from trainer.bridge.splits import BridgeSplit, load_split
from trainer.bridge.stage import rows_of, settings
from trainer.bridge.transitions import fit_linear
from trainer.eval.retrieval import ranks_of_truth, topk_accuracy
from trainer.eval.space import to_anchor_space

log = logging.getLogger(__name__)
ESHOT_KS = (1, 5)


def retrieval(queries: torch.Tensor, gallery: torch.Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    """R@K of ``queries[i]`` finding ``gallery[i]`` (unit vectors, cosine)."""
    ranks = ranks_of_truth(queries, gallery, torch.arange(len(queries)))
    return {**topk_accuracy(ranks, ks), "n": len(queries)}


def eshot(queries: torch.Tensor, targets: torch.Tensor, labels: list[str | None]) -> dict[str, Any]:
    """top-1/top-5 of each query's class among leave-own-partner-out class vectors of ``targets``."""
    names = sorted({y for y in labels if y is not None})
    if not names:
        return {}
    col = {y: j for j, y in enumerate(names)}
    onehot = torch.zeros(len(labels), len(names))
    for i, y in enumerate(labels):
        if y is not None:
            onehot[i, col[y]] = 1.0
    sums, counts = onehot.T @ targets, onehot.sum(0)
    keep = [i for i, y in enumerate(labels) if y is not None and counts[col[y]] > 1]
    if not keep:
        return {}
    rows = torch.as_tensor(keep)
    truth = torch.as_tensor([col[labels[i]] for i in keep])
    scores = queries[rows] @ F.normalize(sums, dim=-1).T  # (q, classes)
    own = (queries[rows] * F.normalize(sums[truth] - targets[rows], dim=-1)).sum(1)  # own class, own partner out
    scores[torch.arange(len(keep)), truth] = own
    ranks = (scores > own[:, None]).sum(1)
    return {**topk_accuracy(ranks, ESHOT_KS, prefix="top"), "n": len(keep), "classes": len(names)}


def score(a: torch.Tensor, c: torch.Tensor, split: BridgeSplit, labels: list[str | None],
          ks: tuple[int, ...], a_in_c: torch.Tensor | None = None, c_in_a: torch.Tensor | None = None) -> dict:
    """Both directions from ``a``/``c`` in one space, or (ridge) from the mapped ``a_in_c``, ``c_in_a``."""
    q_ac, q_ca = (a, c) if a_in_c is None else (a_in_c, c_in_a)
    out = {}
    for (q, g, src, dst) in ((q_ac, c, split.a, split.c), (q_ca, a, split.c, split.a)):
        out[f"{src}->{dst}"] = retrieval(q, g, ks)
        if es := eshot(q, g, labels):
            out[f"{src}->{dst}"]["eshot"] = es
    return out


def chance(n: int, labels: list[str | None], split: BridgeSplit, ks: tuple[int, ...]) -> dict:
    classes = len({y for y in labels if y is not None})
    one = {**{f"R@{k}": min(k, n) / n for k in ks}, "n": n}
    if classes:
        one["eshot"] = {f"top{k}": min(k, classes) / classes for k in ESHOT_KS} | {"classes": classes}
    return {f"{split.a}->{split.c}": one, f"{split.c}->{split.a}": dict(one)}


def heads_space(heads: dict, a: str, c: str, a_vecs: np.ndarray, c_vecs: np.ndarray) -> tuple[torch.Tensor, ...]:
    return to_anchor_space(a_vecs, heads.get(a)), to_anchor_space(c_vecs, heads.get(c))


def ridge_composition(manifest: Manifest, split: BridgeSplit, stores: dict, a_e: np.ndarray, c_e: np.ndarray):
    """``a -> p -> c`` and ``c -> p -> a`` applied to the evaluation items, unit-normalised."""
    s = settings(manifest.bridge)
    p1, p2 = rows_of(stores[split.pivot], split.d1), rows_of(stores[split.pivot], split.d2)
    a1, c2 = rows_of(stores[split.a], split.d1), rows_of(stores[split.c], split.d2)
    a_to_p, _ = fit_linear(a1, p1, s)
    p_to_c, _ = fit_linear(p2, c2, s)
    c_to_p, _ = fit_linear(c2, p2, s)
    p_to_a, _ = fit_linear(p1, a1, s)
    return (F.normalize(torch.from_numpy(a_to_p.then(p_to_c)(a_e)).float(), dim=-1),
            F.normalize(torch.from_numpy(c_to_p.then(p_to_a)(c_e)).float(), dim=-1))


def is_mox_run(run_config: dict[str, Any]) -> bool:
    """Whether a run's config says it was trained on a bridge's pseudo partners (not its emergent route)."""
    return run_config.get("train_summary", {}).get("bridge", {}).get("role") == "mox"


def bridge_section(manifest: Manifest, run: RunLayout, run_config: dict[str, Any], ks: tuple[int, ...]) -> dict[str, Any]:
    """The ``bridge`` section for ``run`` (trained with ``train.bridge``)."""
    train = run_config.get("manifest", {}).get("train", {})
    name, run_name = train["bridge"], train.get("run", run.root.name)
    config = read_bridge_config(manifest.layout, name)
    split = load_split(manifest.output, config["pivot"], *config["modalities"])
    stores = {m: read_store(manifest.output, m) for m in (split.pivot, split.a, split.c)}
    a_e, c_e = rows_of(stores[split.a], split.evaluation), rows_of(stores[split.c], split.evaluation)
    known = sample_labels(manifest.layout, manifest.eval.label_key)
    labels = [known.get(k) for k in split.evaluation]
    heads, _ = load_heads(run.root)
    out: dict[str, Any] = {"bridge": name, "items": len(split.evaluation), "sizes": split.sizes(),
                           "mox": score(*heads_space(heads, split.a, split.c, a_e, c_e), split, labels, ks)}
    emergent_layout = manifest.layout.run(emergent_run(run_name))
    if emergent_layout.heads.is_file():
        emergent, _ = load_heads(emergent_layout.root)
        out["emergent"] = score(*heads_space(emergent, split.a, split.c, a_e, c_e), split, labels, ks)
    else:
        log.warning("bridge eval: no emergent route at %s (train with bridge.emergent = true)", emergent_layout.root)
    a_in_c, c_in_a = ridge_composition(manifest, split, stores, a_e, c_e)
    unit_a, unit_c = (F.normalize(torch.from_numpy(np.asarray(v, np.float32)), dim=-1) for v in (a_e, c_e))
    out["ridge"] = score(unit_a, unit_c, split, labels, ks, a_in_c, c_in_a)
    out["chance"] = chance(len(split.evaluation), labels, split, ks)
    return out
