"""The 2-D map of the listings: UMAP of the chosen PCA space when umap-learn is installed, else the
first two principal components. Past MAP_POINTS listings a seeded sample of them is mapped."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import numpy as np

from pipeline.core.manifest import ManifestError

log = logging.getLogger(__name__)
MAP_POINTS = 20_000
UMAP_NEIGHBOURS = 15
INSTALL = "pip install 'bindery[analyze]' (or pip install umap-learn)"


@dataclass
class Map2D:
    coords: np.ndarray  # (m, 2) float32
    index: np.ndarray  # (m,) the listings shown, as indices into the listings
    method: str  # "UMAP" | "PCA-2"


def umap_installed() -> bool:
    return importlib.util.find_spec("umap") is not None


def map_method(setting: str) -> str:
    """``analyze.map`` resolved to "umap" or "pca"; an error naming the key when umap is asked but absent."""
    if setting == "umap" and not umap_installed():
        raise ManifestError(f"analyze.map: \"umap\" needs umap-learn, which is not installed; {INSTALL}, "
                            "or set analyze.map = \"pca\"")
    if setting == "auto":
        if umap_installed():
            return "umap"
        log.info("umap-learn is not installed, so the 2-D map is PCA-2; for a UMAP map: %s", INSTALL)
        return "pca"
    return setting


def map_2d(chosen: np.ndarray, leading: np.ndarray, method: str, seed: int) -> Map2D:
    """Map ``chosen`` (the chosen PCA vectors) by UMAP, or take ``leading`` (the first two PCA
    coordinates) for "pca"."""
    n = len(chosen)
    index = np.arange(n)
    if n > MAP_POINTS:
        index = np.sort(np.random.default_rng(seed).choice(n, MAP_POINTS, replace=False))
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(UMAP_NEIGHBOURS, len(index) - 1), random_state=seed)
        coords = reducer.fit_transform(chosen[index])
        return Map2D(np.asarray(coords, np.float32), index, "UMAP")
    coords = leading[index, :2]
    if coords.shape[1] < 2:  # analyze.dims = [1]: a line, drawn on the x axis
        coords = np.hstack([coords, np.zeros((len(index), 1), coords.dtype)])
    return Map2D(np.asarray(coords, np.float32), index, "PCA-2")
