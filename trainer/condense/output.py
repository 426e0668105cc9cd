"""A condensed set written as a store: ``<output>/condensed/<name>-<per_class>/``.

The folder has the layout of any output (``pipeline.core.layout.OutputLayout``), so pointing
``dataset.output`` at it lets ``bindery train``, ``eval`` and ``publish`` read it unchanged:

* ``embeddings/<m>/part-000000.parquet``: keys ``syn-<class>-<i>``, the same key in every modality
  (one synthetic pair = one sample), float32 unit vectors;
* ``metadata/part-000000.parquet``: each key's json with the class under ``condense.label_key``;
* ``classes/text.parquet``: the source's class names, when text is condensed in its own space;
* ``config.json``: how the set was made, the loss curves and the wall time; ``loss.png``: the curves.

The set is built in a hidden folder beside its final place and swapped in whole, so a reader
never sees half a set, and a rerun leaves nothing of the previous one (heads trained on it included).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import Manifest
from pipeline.core.plots import pyplot, save_png
from pipeline.core.samples import write_metadata
from pipeline.core.store import atomic_write, atomic_write_text, write_embeddings
from trainer.condense.optimise import Condensed, Curves
from trainer.condense.space import Space

PART = "000000"


def synthetic_keys(classes: list[str], per_class: int) -> list[str]:
    """``syn-<class>-<i>`` for every class and i, class-major (the rows' order in every store)."""
    return [f"syn-{name}-{i}" for name in classes for i in range(per_class)]


def write_loss_plot(path: Path, curves: Curves, title: str) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 3.5), dpi=100)
    for name in ("total", "uni", "cross", "joint"):
        values = getattr(curves, name)
        if any(values):
            ax.plot(np.arange(1, len(values) + 1), values, label=name, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss per class")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def set_config(manifest: Manifest, result: Condensed, counts: np.ndarray) -> dict:
    c = manifest.condense
    steps = len(result.curves.total)
    return {
        "method": "ImageBindDC (CF distribution matching; METHODS.md section 5)",
        "name": c.name, "per_class": result.per_class, "source": str(manifest.output), "space": c.space,
        "modalities": list(result.vectors), "classes": result.classes,
        "real_pairs_per_class": dict(zip(result.classes, counts.tolist(), strict=True)),
        "split": {"seed": manifest.train.seed, "val_fraction": manifest.train.val_fraction, "side": "train"},
        "condense": dataclasses.asdict(c), "steps": steps, "class_chunks_per_step": result.chunks,
        "seconds": round(result.seconds, 3),
        "seconds_per_class_step": result.seconds / max(1, steps * len(result.classes)),
        "curves": dataclasses.asdict(result.curves),
    }


def write_set(manifest: Manifest, space: Space, result: Condensed, counts: np.ndarray) -> OutputLayout:
    """Write one condensed set in the store format; return its layout."""
    c = manifest.condense
    final = manifest.layout.condensed_set(c.name, result.per_class)
    stage = OutputLayout(final.root.with_name(f".{final.root.name}.{uuid.uuid4().hex}.tmp"))
    try:
        keys = synthetic_keys(result.classes, result.per_class)
        for m, vecs in result.vectors.items():
            dim = vecs.shape[-1]
            write_embeddings(stage.embedding_part(m, PART), keys, vecs.reshape(-1, dim), dtype="float32",
                             metadata=space.store_metadata(manifest, m, dim))
        labels = np.repeat(result.classes, result.per_class)
        write_metadata(stage, PART, [(k, json.dumps({c.label_key: str(lab), "condensed": final.root.name}))
                                     for k, lab in zip(keys, labels, strict=True)])
        if "text" in result.vectors and "text" in space.same and manifest.layout.classes.is_file():
            source = manifest.layout.classes
            atomic_write(stage.classes, lambda tmp: shutil.copyfile(source, tmp))
        atomic_write_text(stage.derived_config, json.dumps(set_config(manifest, result, counts), indent=2))
        write_loss_plot(stage.plot("loss"), result.curves, f"{final.root.name}: {len(result.classes)} classes")
        swap_in(stage.root, final.root)
    finally:
        shutil.rmtree(stage.root, ignore_errors=True)
    return final


def swap_in(new: Path, final: Path) -> None:
    """Move the finished folder ``new`` onto ``final``, replacing what was there."""
    old = final.with_name(f".{final.name}.{uuid.uuid4().hex}.old")
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
