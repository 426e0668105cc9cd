"""The analysis's PNG plots (matplotlib, Agg backend), each written atomically.

* ``scores``: silhouette, Calinski–Harabasz and Davies–Bouldin against dim, one line per k, the choice starred;
* ``labels``: NMI, ARI and purity against dim, one line per k (only with labels);
* ``map``: the 2-D map coloured by the chosen clustering, and by label where labels exist;
* ``sizes``: the chosen clustering's cluster sizes, largest first, each bar named by its commonest label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.store import atomic_write
from trainer.analyze.choose import Choice
from trainer.analyze.cluster import Clustering, Setting
from trainer.analyze.describe import ClusterInfo
from trainer.analyze.embed2d import Map2D

INTERNAL_TITLES = {"silhouette": "silhouette (higher is better)",
                   "calinski_harabasz": "Calinski–Harabasz (higher is better)",
                   "davies_bouldin": "Davies–Bouldin (lower is better)"}
EXTERNAL_TITLES = {"nmi": "NMI vs labels", "ari": "ARI vs labels", "purity": "purity vs labels"}
MAX_LEGEND = 20


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


def score_lines(path: Path, clusterings: dict[Setting, Clustering], choice: Choice, titles: dict[str, str]) -> None:
    """One panel per score in ``titles``: the score against dim, one line per k, the chosen setting starred."""
    plt = _pyplot()
    dims = sorted({s.dim for s in clusterings})
    ks = sorted({s.k for s in clusterings})
    fig, axes = plt.subplots(1, len(titles), figsize=(4.2 * len(titles), 3.6))
    for ax, (name, title) in zip(np.atleast_1d(axes), titles.items(), strict=True):
        for k in ks:
            values = [getattr(clusterings[Setting(d, k)].scores, name) for d in dims]
            ax.plot(dims, [np.nan if v is None else v for v in values], marker="o", label=f"k={k}")
        chosen = clusterings[choice.setting].scores
        ax.plot([choice.setting.dim], [getattr(chosen, name)], marker="*", markersize=16, color="black",
                linestyle="none", label=f"chosen {choice.setting.name}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.set_xlabel("PCA dim")
        ax.set_title(title, fontsize=10)
    np.atleast_1d(axes)[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    _save(fig, path)


def colour(i: int):
    """The colour of cluster ``i`` (or of the ``i``-th label), the same in the map and the size bars."""
    return _pyplot().get_cmap("tab20")(i % 20)


def _scatter(ax, coords: np.ndarray, groups: np.ndarray, title: str) -> None:
    names = sorted(set(groups.tolist()))  # cluster ids (ints) or label names (str)
    for i, name in enumerate(names):
        sel = groups == name
        ax.scatter(coords[sel, 0], coords[sel, 1], s=8, color=colour(name if isinstance(name, int) else i),
                   label=str(name) or "(none)")
    if len(names) <= MAX_LEGEND:
        ax.legend(fontsize=6, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def cluster_map(path: Path, mapped: Map2D, assignments: np.ndarray, labels: np.ndarray | None,
                setting: Setting) -> None:
    """The 2-D map coloured by cluster (and by label when ``labels`` is given)."""
    plt = _pyplot()
    panels = 2 if labels is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 5))
    axes = np.atleast_1d(axes)
    shown = f"{len(mapped.index)} listings, {mapped.method}"
    _scatter(axes[0], mapped.coords, assignments[mapped.index], f"clusters of {setting.name} ({shown})")
    if labels is not None:
        _scatter(axes[1], mapped.coords, labels[mapped.index], f"labels ({shown})")
    _save(fig, path)


def cluster_sizes(path: Path, infos: list[ClusterInfo], setting: Setting) -> None:
    """Bars of the cluster sizes, largest first, labelled by cluster id and commonest label."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(infos) + 2), 4))
    ax.bar(range(len(infos)), [i.size for i in infos], color=[colour(i.cluster) for i in infos])
    names = [f"{i.cluster}: {i.labels[0][0]}" if i.labels else str(i.cluster) for i in infos]
    ax.set_xticks(range(len(infos)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("listings")
    ax.set_title(f"cluster sizes of {setting.name} (cluster: commonest label)", fontsize=10)
    _save(fig, path)
