"""When to trust an auto-pair: a score threshold per target modality, calibrated on pairs whose truth is known.

The bootstrap pairs captions with items through small round-1 heads, and on mixed data most
captions have no true partner in most modalities (a clip-art title has no sound). So a neighbour
is accepted only when its score clears what a *wrong* partner reaches:

* **Truth-known queries**: query items whose own key also has a target item (the item's own
  caption), on the training side of the head run's split only (the held-out side never tunes
  what round 2 trains on).
* **Non-pair scores**: for each such query, the best raw-list score among targets that are *not*
  its own item (its strongest impostor).
* **Threshold** = the ``pair.accept_quantile`` quantile of those non-pair scores: with 0.95, only
  5 % of the truth-known queries' best wrong partners would pass it. Mutual-NN and ``min_score``
  combine with it (a neighbour must pass all); a query none of whose neighbours passes gets null.
* **Report**: the threshold, how many truth-known pairs it was drawn from, the share of their true
  partners that clear it, the acceptance rate over all queries and, where truth is known, the
  precision of the accepted partners (chosen target = the query's own item), on each side of the split.

Without any truth-known pair the threshold cannot be calibrated: every neighbour is accepted
(as with ``accept_quantile = 0``) and the report says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import PairConfig, TrainConfig
from pipeline.core.split import is_val

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Neighbours:
    """One target modality's raw kNN lists, flat: ``query[i]`` -> ``target[i]`` with ``score[i]``."""

    query: np.ndarray
    target: np.ndarray
    score: np.ndarray


@dataclass(frozen=True)
class Truth:
    """Each query's own item in the target store (-1 where none) and the query's held-out flag."""

    own: np.ndarray
    held_out: np.ndarray

    @classmethod
    def of(cls, query_keys: np.ndarray, target_keys: np.ndarray, held_out: np.ndarray) -> Truth:
        pos = {k: j for j, k in enumerate(target_keys.tolist())}
        return cls(np.array([pos.get(k, -1) for k in query_keys.tolist()], np.int64), held_out)


@dataclass(frozen=True)
class Calibration:
    threshold: float | None  # None: accept every neighbour
    calibrated_on: int  # truth-known training-side queries
    true_pass_rate: float | None  # share of their own items that clear the threshold

    def min_score(self, floor: float) -> float:
        return floor if self.threshold is None else max(floor, self.threshold)


def split_params(cfg: PairConfig, layout: OutputLayout, train: TrainConfig) -> tuple[int, float]:
    """``(seed, val_fraction)`` of the head run's recorded ``[train]`` (else the manifest's)."""
    recorded: dict = {}
    if cfg.head_run and layout.run(cfg.head_run).config.is_file():
        recorded = json.loads(layout.run(cfg.head_run).config.read_text()).get("manifest", {}).get("train", {})
    return int(recorded.get("seed", train.seed)), float(recorded.get("val_fraction", train.val_fraction))


def query_truth(query_keys: np.ndarray, target_keys: np.ndarray, seed: int, fraction: float) -> Truth:
    return Truth.of(query_keys, target_keys, is_val(query_keys, seed, fraction))


def best_non_pair(nb: Neighbours, own: np.ndarray, n_queries: int) -> np.ndarray:
    """Per query, the best raw-list score of a target that is not its own item (NaN if none)."""
    wrong = nb.target != own[nb.query]
    best = np.full(n_queries, -np.inf)
    np.maximum.at(best, nb.query[wrong], nb.score[wrong].astype(np.float64))
    return np.where(np.isfinite(best), best, np.nan)


def calibrate(nb: Neighbours, truth: Truth, true_scores: np.ndarray, quantile: float) -> Calibration:
    """The threshold from the training side's truth-known queries; ``true_scores[i]`` = query i's
    score with its own item (NaN where it has none)."""
    known = (truth.own >= 0) & ~truth.held_out
    impostor = best_non_pair(nb, truth.own, len(truth.own))[known]
    impostor = impostor[np.isfinite(impostor)]
    if quantile <= 0 or not len(impostor):
        return Calibration(None, int(len(impostor)), None)
    threshold = float(np.quantile(impostor, quantile))
    true = true_scores[known]
    return Calibration(threshold, int(len(impostor)), round(float((true >= threshold).mean()), 6))


def own_scores(query_vectors: np.ndarray, target_vectors: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Each query's cosine with its own target item (unit vectors), NaN where it has none."""
    out = np.full(len(own), np.nan, np.float64)
    has = own >= 0
    out[has] = np.einsum("ij,ij->i", query_vectors[has], target_vectors[own[has]])
    return out


def acceptance_report(cal: Calibration, truth: Truth, chosen: np.ndarray, quantile: float) -> dict:
    """The pairs/summary.json block of one target modality."""
    accepted = chosen >= 0
    report = {"accept_quantile": quantile,
              "threshold": None if cal.threshold is None else round(cal.threshold, 6),
              "calibrated_on": cal.calibrated_on, "true_pairs_passing": cal.true_pass_rate,
              "acceptance_rate": round(float(accepted.mean()), 6) if len(chosen) else None}
    for side, flag in (("train", False), ("held_out", True)):
        known = (truth.own >= 0) & (truth.held_out == flag)
        took = known & accepted
        report[f"precision_{side}"] = round(float((chosen[took] == truth.own[took]).mean()), 6) if took.any() else None
        report[f"accepted_truth_known_{side}"] = int(took.sum())
        report[f"truth_known_{side}"] = int(known.sum())
    if cal.threshold is None:
        log.warning("pair: no calibrated threshold (%s truth-known training pairs, accept_quantile %g); "
                    "every neighbour is accepted", cal.calibrated_on, quantile)
    return report
