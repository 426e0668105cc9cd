"""Planted-truth embedding stores, written directly in the store format.

The anchor (text) is random unit vectors; every other modality is a fixed random linear map
of the anchor plus Gaussian noise, so item ``i`` of every store shares key ``s{i:05d}`` and
its true partner in any other modality is the item with the same key. The anchor store and
its noisy copies (image/video of the anchor's dim) carry ``space = "planted"`` metadata, so
pairing treats them as one space; the linearly mapped modalities carry no space key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.layout import part_name
from pipeline.core.store import embeddings_dir, write_embeddings


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


SPACE = "planted"


def is_copy(m: str, dims: dict[str, int], anchor: str = "text") -> bool:
    """Whether planted modality ``m`` is a noisy copy of the anchor (shares its space)."""
    return m in ("image", "video") and dims[m] == dims[anchor]


def planted_vectors(n: int, dims: dict[str, int], noise: float = 0.1, seed: int = 0,
                    anchor: str = "text") -> dict[str, np.ndarray]:
    """Unit vectors per modality; ``dims[anchor]`` is the anchor's dim. A modality whose dim
    equals the anchor's and is named 'image' or 'video' is a noisy copy (a shared space)."""
    rng = np.random.default_rng(seed)
    base = unit(rng.standard_normal((n, dims[anchor])))
    out = {anchor: base}
    for m, d in dims.items():
        if m == anchor:
            continue
        if is_copy(m, dims, anchor):
            mapped = base
        else:
            mapped = base @ rng.standard_normal((dims[anchor], d)) / np.sqrt(dims[anchor])
            mapped = unit(mapped)
        out[m] = unit(mapped + noise * rng.standard_normal((n, d)) / np.sqrt(d))
    return out


def write_planted_stores(output: str | Path, n: int = 500, dims: dict[str, int] | None = None,
                         noise: float = 0.1, seed: int = 0, parts: int = 2, dtype: str = "float32",
                         drop: dict[str, list[int]] | None = None) -> dict[str, np.ndarray]:
    """Write ``parts`` parts per modality under ``output``; return the vectors written.

    ``drop`` removes item indices from a modality's store (items missing that modality).
    """
    dims = dims or {"text": 32, "image": 32, "audio": 24, "points": 16}
    vectors = planted_vectors(n, dims, noise, seed)
    keys = np.array([f"s{i:05d}" for i in range(n)], dtype=object)
    for m, vecs in vectors.items():
        keep = np.ones(n, dtype=bool)
        keep[(drop or {}).get(m, [])] = False
        idx = np.flatnonzero(keep)
        space = {"space": SPACE} if m == "text" or is_copy(m, dims) else {}
        for p, chunk in enumerate(np.array_split(idx, parts)):
            write_embeddings(embeddings_dir(output, m) / part_name(f"{p:06d}"), list(keys[chunk]), vecs[chunk],
                             dtype=dtype, metadata={"encoder": f"planted-{m}", "dim": dims[m], "normalized": True,
                                                    "modality": m, "dtype": dtype, **space})
    return vectors
