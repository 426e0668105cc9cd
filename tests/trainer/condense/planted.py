"""Planted classes in two linked modalities, written in the store format.

Each class ``c`` has a latent centre ``mu_c``; a sample draws ``z = mu_c + noise`` and its image and
text vectors are ``unit(z A + e_a)`` and ``unit(z B + e_b)`` for fixed random maps ``A``, ``B``:
the two modalities are linked through ``z`` (the same key is the same sample) and each carries
the class. Keys are ``p<class>-<i>``; the class name sits in each sample's json under ``label``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import Manifest, from_dict
from pipeline.core.samples import write_metadata
from pipeline.core.store import write_embeddings


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def planted_classes(output: Path, classes: int = 6, per_class: int = 150, latent: int = 8, dims=(32, 32),
                    spread: float = 1.0, noise: float = 0.5, seed: int = 0) -> dict[str, np.ndarray]:
    """Write image/text stores and metadata under ``output``; return keys, labels and vectors."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, latent))
    label = np.repeat(np.arange(classes), per_class)
    z = centres[label] + spread * rng.standard_normal((len(label), latent))
    out = {"label": label, "keys": np.array([f"p{c}-{i}" for c in range(classes) for i in range(per_class)])}
    layout = OutputLayout(output)
    for m, d in zip(("image", "text"), dims, strict=True):
        mapping = rng.standard_normal((latent, d)) / np.sqrt(latent)
        out[m] = unit(z @ mapping + noise * rng.standard_normal((len(label), d))).astype(np.float32)
        for part, idx in enumerate(np.array_split(rng.permutation(len(label)), 2)):
            write_embeddings(layout.embedding_part(m, f"{part:06d}"), list(out["keys"][idx]), out[m][idx],
                             dtype="float32", metadata={"encoder": f"planted-{m}", "dim": d, "normalized": True,
                                                        "modality": m, "dtype": "float32"})
    rows = [(k, json.dumps({"label": f"class{c}"})) for k, c in zip(out["keys"], label, strict=True)]
    write_metadata(layout, "000000", rows)
    return out


def manifest_for(output: Path, **condense) -> Manifest:
    raw = {"dataset": {"name": "planted-classes", "shards": "unused-{0..1}.tar", "output": str(output)},
           "modalities": {m: {"encoder": f"planted-{m}"} for m in ("image", "text")},
           "train": {"anchor": "text", "modalities": ["image"], "hidden": 64, "epochs": 20, "batch_size": 64,
                     "lr": 3e-3, "warmup_steps": 2, "val_fraction": 0.3, "use_quintuples": False},
           "condense": {"name": "planted", "per_class": [10], "steps": 150, "frequencies": 512,
                        "batch_size": 128, **condense}}
    return from_dict(raw, base=output)
