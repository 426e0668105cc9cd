"""Classification in the anchor space: zero-shot against embedded class names, and EShot.

* Zero-shot: each held-out item's label (``[eval] label_key`` of its sample json) against the class
  names embedded as text (the layout's ``classes`` table, written by precompute with the anchor's
  text encoder and ``class_prompt``); top-1 / top-5 accuracy. The candidates are the modality's own
  label set (the classes its training-side items carry: a sound is never classified among clip-art
  categories), and both sides are centred before the cosine: the items on the mean of the
  modality's training-side vectors, the class names on the mean of the anchor's training-side text
  vectors (the modality gap: each modality's vectors sit in their own cone, and the class name
  nearest that cone's centre would otherwise take most items). Beside it, ``majority`` (the share of
  held-out items in the training side's most frequent class) and ``chance`` (1 / classes), so a
  reader sees when zero-shot is worse than guessing.
* EShot ``q:c``: class vectors are the L2-normalised means of the labelled ``c`` items (training
  side of the split), queried by the held-out ``q`` items; top-1 / top-5 accuracy.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.store import read_part
from trainer.eval.retrieval import ranks_of_truth, topk_accuracy
from trainer.eval.space import Space, to_anchor_space

log = logging.getLogger(__name__)


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


def centred(vectors: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``vectors`` minus the mean of ``reference``, L2-normalised (unchanged when ``reference`` is empty)."""
    return F.normalize(vectors - reference.mean(0), dim=-1) if len(reference) else vectors


def modality_zero_shot(space: Space, m: str, labels: dict[str, str], names: list[str], class_vecs: torch.Tensor,
                       text_train: torch.Tensor, split: str) -> dict[str, Any]:
    """Zero-shot of ``m`` over its own label set, centred, with the majority-class rate and chance."""
    train_side = space.side(m, split, held_out=False)
    seen = Counter(labels[k] for k in space.keys[m][train_side] if labels.get(k) in names)
    own = sorted(seen)
    if not own:
        return {}
    col = [names.index(n) for n in own]
    centred_space = dataclasses.replace(space, vecs={**space.vecs, m: centred(space.vecs[m], space.vecs[m][train_side])})
    held = space.side(m, split)
    out = classify(centred_space, m, held, labels, own, centred(class_vecs[col], text_train))
    if not out:
        return {}
    majority = seen.most_common(1)[0][0]
    judged = [labels[k] for k in space.keys[m][held] if labels.get(k) in own]
    return {**out, "majority": float(np.mean([y == majority for y in judged])), "majority_class": majority,
            "chance": 1.0 / len(own)}


def zero_shot(space: Space, classes: Path, labels: dict[str, str], split: str) -> dict[str, Any]:
    """Zero-shot accuracy of every non-text modality against the class-name table ``classes``."""
    if not classes.is_file() or not labels:
        log.info("zero-shot skipped: %s", "no labels in the sample metadata" if classes.is_file() else f"no {classes}")
        return {}
    if space.anchor != "text" and "text" not in space.heads and "text" not in space.mods:
        log.warning("zero-shot skipped: text is neither the anchor, a passthrough nor a projected modality")
        return {}
    table = read_part(classes)
    class_vecs = to_anchor_space(table.vectors, space.heads.get("text"))
    names = [str(k) for k in table.keys]
    text_train = space.vecs["text"][space.side("text", split, held_out=False)] if "text" in space.vecs else class_vecs
    return {m: r for m in space.mods if m != "text"
            if (r := modality_zero_shot(space, m, labels, names, class_vecs, text_train, split))}


def class_means(space: Space, c: str, labels: dict[str, str], split: str) -> tuple[list[str], torch.Tensor] | None:
    """Class names and the L2-normalised mean of each class's labelled ``c`` items on the training side."""
    src = space.side(c, split, held_out=False)
    by_class: dict[str, list[int]] = {}
    for i, k in zip(src, space.keys[c][src], strict=True):
        if k in labels:
            by_class.setdefault(labels[k], []).append(int(i))
    if not by_class:
        return None
    names = sorted(by_class)
    return names, F.normalize(torch.stack([space.vecs[c][by_class[n]].mean(0) for n in names]), dim=-1)


def eshot(space: Space, pairs: tuple[str, ...], labels: dict[str, str], split: str) -> dict[str, Any]:
    """EShot accuracy of every ``query:class-source`` pair whose two modalities are in the space."""
    out = {}
    for pair in pairs:
        q, c = pair.split(":")
        if q not in space.mods or c not in space.mods:
            log.info("eshot %s skipped: %s not in the run's space", pair, q if q not in space.mods else c)
            continue
        if (protos := class_means(space, c, labels, split)) is None:
            continue
        if r := classify(space, q, space.side(q, split), labels, *protos):
            out[pair] = r
    return out
