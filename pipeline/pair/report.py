"""pairs/summary.json numbers and the per-modality score histograms (pairs/scores_<m>.png)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.core.store import atomic_write

log = logging.getLogger(__name__)

QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def quantiles(values: np.ndarray) -> dict[str, float] | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    return {f"p{round(q * 100)}": round(float(v), 6) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES),
                                                                         strict=True)}


def modality_stats(n_targets: int, raw_top1: np.ndarray, n_raw: int, n_kept: int, chosen_target: np.ndarray,
                   chosen_score: np.ndarray) -> dict:
    """Counts and score quantiles of one target modality."""
    ok = chosen_target >= 0
    uses = np.bincount(chosen_target[ok], minlength=1) if ok.any() else np.zeros(1, np.int64)
    return {
        "targets": int(n_targets),
        "neighbours_raw": int(n_raw),
        "neighbours_kept": int(n_kept),
        "paired_queries": int(ok.sum()),
        "unpaired_queries": int((~ok).sum()),
        "distinct_targets_chosen": int((uses > 0).sum()),
        "max_uses_of_one_target": int(uses.max()),
        "top1_score": quantiles(raw_top1),
        "chosen_score": quantiles(chosen_score[ok]),
    }


def write_histogram(path: Path, modality: str, query: str, raw_top1: np.ndarray, chosen: np.ndarray,
                    min_score: float) -> None:
    """A PNG histogram of raw top-1 scores and of the chosen partners' scores (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    bins = np.linspace(-1.0, 1.0, 81)
    raw_top1 = raw_top1[np.isfinite(raw_top1)]
    chosen = chosen[np.isfinite(chosen)]
    ax.hist(raw_top1, bins=bins, alpha=0.5, label=f"top-1 ({len(raw_top1)})")
    ax.hist(chosen, bins=bins, alpha=0.5, label=f"chosen after filters ({len(chosen)})")
    if min_score > -1.0:
        ax.axvline(min_score, color="k", linestyle="--", linewidth=1, label=f"min_score {min_score:g}")
    ax.set_xlabel("cosine score")
    ax.set_ylabel("queries")
    ax.set_title(f"{query} -> {modality}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
