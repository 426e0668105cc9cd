"""Heads trained by `bindery train` on a condensed set, against heads trained on all pairs.

Both runs go through :func:`trainer.train.run` on a store in the condensation space, with the
manifest's ``[train]`` section except: own-caption pairs only (same key = one pair), one head from
each condensed modality into the first one that is ``train.anchor`` (else the first listed), and
the same number of optimisation steps (a small set gets more epochs). The reference store holds the
real pairs (both sides of the split, so `bindery train` holds out exactly the held-out keys); a
condensed set trains on every synthetic pair (``val_fraction`` ~ 0). Both are scored on the real
held-out pairs: Recall@K between the anchor and each other modality, as `bindery eval` does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.heads_file import load_heads, project
from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import Manifest, from_dict
from pipeline.core.store import write_embeddings
from trainer.condense.sets import LabelledPairs
from trainer.condense.space import Space
from trainer.eval.retrieval import ranks_of_truth, topk_accuracy

RUN = "condense-report"
ALL_TRAIN = 1e-9  # val_fraction of a condensed set's run: every synthetic pair trains


def anchor_of(manifest: Manifest) -> str:
    mods = manifest.condense.modalities
    return manifest.train.anchor if manifest.train.anchor in mods else mods[0]


def steps_of(items: int, batch: int, epochs: int) -> int:
    return math.ceil(items / batch) * epochs


def train_manifest(manifest: Manifest, output: Path, epochs: int, val_fraction: float) -> Manifest:
    raw = manifest.to_dict()
    anchor = anchor_of(manifest)
    raw["dataset"]["output"] = str(output)
    raw["train"].update(run=RUN, anchor=anchor, anchor_passthrough=[], epochs=epochs, val_fraction=val_fraction,
                        modalities=[m for m in manifest.condense.modalities if m != anchor],
                        use_quintuples=False, use_captions=True, triples="", bridge="")
    return from_dict(raw, base=output)


def write_real_store(manifest: Manifest, space: Space, pairs: LabelledPairs, layout: OutputLayout) -> None:
    for m, vecs in pairs.vectors.items():
        write_embeddings(layout.embedding_part(m, "000000"), list(pairs.keys), vecs, dtype="float32",
                         metadata=space.store_metadata(manifest, m, vecs.shape[1]))


def epochs_for(steps: int, items: int, batch: int) -> int:
    """Epochs over ``items`` pairs that take at least ``steps`` steps."""
    return max(1, math.ceil(steps / math.ceil(items / batch)))


def train(manifest: Manifest, output: Path, epochs: int, val_fraction: float) -> Path:
    """`bindery train` on the store at ``output``; the run's folder."""
    from trainer.train import run  # the loop and accelerate are loaded only when heads are trained

    m = train_manifest(manifest, output, epochs, val_fraction)
    run(m)
    return m.layout.run(RUN).root


@torch.no_grad()
def held_out_recall(run_dir: Path, test: LabelledPairs, anchor: str, ks: tuple[int, ...]) -> dict[str, Any]:
    """Recall@K anchor<->m over the held-out pairs (a query's truth is the item of its own key)."""
    heads, _ = load_heads(run_dir)
    vecs = {m: project(heads[m], torch.from_numpy(v)) if m in heads else torch.from_numpy(v)
            for m, v in test.vectors.items()}
    truth = torch.arange(len(test))
    out = {}
    for m in vecs:
        if m == anchor:
            continue
        for q, t in ((m, anchor), (anchor, m)):
            out[f"{q}->{t}"] = {**topk_accuracy(ranks_of_truth(vecs[q], vecs[t], truth), ks), "n": len(test)}
    return out


def share(got: dict[str, Any], full: dict[str, Any], ks: tuple[int, ...]) -> dict[str, Any]:
    return {pair: {f"R@{k}": round(v[f"R@{k}"] / full[pair][f"R@{k}"], 6) if full[pair][f"R@{k}"] else None
                   for k in ks} for pair, v in got.items()}


def mean_recall(result: dict[str, Any], k: int = 1) -> float:
    return float(np.mean([v[f"R@{k}"] for v in result.values()]))
