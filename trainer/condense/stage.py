"""`bindery condense`: ImageBindDC on cached vectors -> ``<output>/condensed/<name>-<per_class>/``.

For each size in ``condense.per_class``: load the labelled pairs of ``condense.modalities`` in the
condensation space, keep the training side of the trainer's held-out split, optimise that many
synthetic pairs per class (:mod:`trainer.condense.optimise`) and write them as a store
(:mod:`trainer.condense.output`). With ``condense.evaluate`` the report follows
(:mod:`trainer.condense.report`, also `bindery condense-eval`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from pipeline.core.manifest import Manifest, ManifestError
from trainer.condense.optimise import condense
from trainer.condense.output import write_set
from trainer.condense.report import run as report
from trainer.condense.sets import check_stores, training_pairs
from trainer.condense.space import Space, check_dims

log = logging.getLogger(__name__)


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ManifestError(f"condense.device: {name!r} but CUDA is not available; use \"auto\" or \"cpu\"")
    return torch.device(name)


def run(manifest: Manifest) -> dict[str, Any]:
    """Condense every size of ``[condense] per_class``; return a summary per set."""
    c = manifest.condense
    check_stores(manifest)
    space = Space(manifest)
    check_dims(manifest, space)
    device = device_of(c.device)
    train = training_pairs(manifest, space)
    counts = train.counts()
    log.info("condense: %d training pairs in %d classes (%d-%d per class), space %r, on %s", len(train),
             len(train.classes), counts.min(), counts.max(), c.space, device)
    sets = []
    for n in c.per_class:
        result = condense(train, c, n, device)
        layout = write_set(manifest, space, result, counts)
        curve = result.curves.total
        sets.append({"per_class": n, "folder": str(layout.root), "classes": len(result.classes),
                     "seconds": round(result.seconds, 2), "loss_first": curve[0], "loss_last": curve[-1]})
    summary: dict[str, Any] = {"name": c.name, "space": c.space, "sets": sets}
    if c.evaluate:
        summary["report"] = report(manifest)
    return summary
