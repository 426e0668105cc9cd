"""Early stopping for small data: a validation slice carved from the *training* side, the best epoch kept.

The slice is ``train.early_stop_fraction`` of the training rows' anchor keys (a hash of
``early-stop:<seed>:key``, independent of the held-out split, which is never looked at). Rows whose
anchor key falls in the slice are not trained on. After every epoch the heads score the slice's
truth-known pairs (a row whose partner is the anchor item's own sample, never an auto-pair): per
projected modality the mean reciprocal rank of each partner's own anchor among the slice's anchors,
and the reverse, averaged over both directions, then over the modalities weighted by their pairs
(every truth pair counts once: a modality with 4 slice pairs must not weigh as much as one with 50). The best epoch's weights are kept
and exported (epoch 0, the initial heads, when they were fitted, ``train.init = "ridge"`` or a warm
start, and no epoch beats them by more than ``train.start_margin_se`` standard errors, see
:class:`BestEpoch`); training stops after ``train.patience`` epochs without a better score. Each
direction's MRR is kept beside the curve (``curve_by_direction``), so a reader sees when the average
hides one direction falling below the start.
"""

from __future__ import annotations

import copy
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.split import key_fraction
from trainer.data.rows import CachedData
from trainer.eval.retrieval import ranks_of_truth

log = logging.getLogger(__name__)


@dataclass
class StopSlice:
    """Per projected modality the (anchor store row, partner store row) truth pairs of the slice."""

    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]
    rows: int  # training rows moved into the slice

    @property
    def empty(self) -> bool:
        return not any(len(a) >= 2 for a, _ in self.pairs.values())


def carve(data: CachedData, fraction: float, seed: int) -> tuple[np.ndarray, StopSlice]:
    """The training rows left to fit on, and the slice (empty with ``fraction`` 0)."""
    if fraction <= 0:
        return data.train_idx, StopSlice({}, 0)
    rows, keys = data.rows, data.keys
    anchor_keys = keys[data.anchor][rows.anchor[data.train_idx]]
    in_slice = key_fraction(anchor_keys, f"early-stop:{seed}") < fraction
    pairs = {}
    for m in data.modalities:
        sel = data.train_idx[in_slice]
        partner = rows.partner[m][sel]
        own = (partner >= 0) & (keys[m][np.maximum(partner, 0)] == keys[data.anchor][rows.anchor[sel]])
        a, p = rows.anchor[sel][own], partner[own]
        _, first = np.unique(a, return_index=True)  # one pair per anchor item
        pairs[m] = (torch.as_tensor(a[first]), torch.as_tensor(p[first]))
    return data.train_idx[~in_slice], StopSlice(pairs, int(in_slice.sum()))


def reciprocal_ranks(q: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``1 / (rank + 1)`` of row i of ``g`` for query row i of ``q`` (cosine, unit rows; the eval's ranking)."""
    return 1.0 / (ranks_of_truth(q, g, torch.arange(len(g), device=g.device)).double() + 1)


@dataclass(frozen=True)
class SliceScore:
    """One scoring of the slice: the value early stopping compares, each direction's MRR, and each pair's
    part of the value (the paired comparison with the start reads it)."""

    value: float  # the directions averaged per modality, then over the modalities weighted by pairs; NaN if empty
    directions: dict[str, float] = field(default_factory=dict)  # "m->anchor" / "anchor->m": that direction's MRR
    per_pair: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per slice pair: its two directions' mean RR


@torch.no_grad()
def score(binder: torch.nn.Module, data: CachedData, stop: StopSlice) -> SliceScore:
    """The slice's retrieval score of ``binder`` with each direction's and each pair's part (eval mode for
    the call). The value is the mean of ``per_pair``: every truth pair counts once."""
    was_training = binder.training
    binder.eval()
    parts, directions = [], {}
    for m, (a, p) in stop.pairs.items():
        if len(a) < 2:
            continue
        anchor = F.normalize(data.vectors[data.anchor][a.to(data.device)].float(), dim=-1)
        proj = binder.project(m, data.vectors[m][p.to(data.device)].float())
        to_anchor, from_anchor = reciprocal_ranks(proj, anchor), reciprocal_ranks(anchor, proj)
        directions[f"{m}->{data.anchor}"] = float(to_anchor.mean())
        directions[f"{data.anchor}->{m}"] = float(from_anchor.mean())
        parts.append((0.5 * (to_anchor + from_anchor)).cpu().numpy())
    binder.train(was_training)
    per_pair = np.concatenate(parts) if parts else np.zeros(0)
    return SliceScore(float(per_pair.mean()) if len(per_pair) else float("nan"), directions, per_pair)


def paired_gain(scored: np.ndarray, start: np.ndarray) -> tuple[float, float]:
    """Mean per-pair gain of ``scored`` over ``start`` and its standard error (0 with fewer than 2 pairs)."""
    diff = np.asarray(scored, dtype=np.float64) - np.asarray(start, dtype=np.float64)
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return float(diff.mean()) if len(diff) else 0.0, se


@dataclass
class BestEpoch:
    """The validation curve so far and the best epoch's weights (on the CPU).

    Epochs are 0-based; epoch -1 is the heads before any training, scored by :meth:`start` when they
    are a fitted solution (``train.init = "ridge"`` or a warm start), so that training is kept only
    where it beats its starting point on the slice, and by more than noise. The best epoch is the
    one with the best value, as without a start; :meth:`settle` then compares it with the start pair
    by pair and keeps the start unless the mean per-pair gain exceeds ``start_margin_se`` standard
    errors of that paired gain: in the spirit of the one-standard-error rule (Hastie, Tibshirani &
    Friedman, ESL 7.10) for two candidates, the untrained start being the simpler one. One test,
    of the chosen epoch only, so the noise of the other epochs does not add chances to pass.
    """

    FORMAT: typing.ClassVar[int] = 2  # of dump(); a checkpoint with another is not resumed (trainer.train.resume)
    patience: int
    start_margin_se: float = 0.0
    first: int = 0  # 0-based epoch the curve starts at (a resumed run's; -1 with the initial heads scored)
    curve: list[float] = field(default_factory=list)
    directions: dict[str, list[float]] = field(default_factory=dict)  # each direction's MRR per scored epoch
    best_epoch: int | None = None
    best_value: float = float("-inf")  # unrounded: the curve's entries are rounded for the report
    best_state: dict | None = None
    best_pairs: list[float] | None = None  # the best epoch's per-pair values
    start_pairs: list[float] | None = None  # the start's per-pair values (None: no start scored)
    start_value: float = float("nan")
    start_state: dict | None = None
    start_test: dict | None = None  # set by settle(): the chosen epoch against the start

    @property
    def last_scored(self) -> int | None:
        """The last epoch the curve holds (None: none yet)."""
        return self.first + len(self.curve) - 1 if self.curve else None

    def start(self, scored: SliceScore, binder: torch.nn.Module) -> None:
        """Score the initial heads as epoch -1 (reported as epoch 0)."""
        self.first = -1
        self.start_pairs, self.start_value = [float(v) for v in scored.per_pair], scored.value
        self.update(-1, scored, binder)
        self.start_state = self.best_state

    def update(self, epoch: int, scored: SliceScore, binder: torch.nn.Module) -> bool:
        """Record epoch ``epoch``'s score; True when training should stop."""
        value = scored.value
        self.curve.append(round(value, 6))
        for direction, v in scored.directions.items():
            self.directions.setdefault(direction, []).append(round(v, 6))
        if self.best_epoch is None or value > self.best_value:
            self.best_epoch, self.best_value = epoch, value
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in binder.state_dict().items()})
            self.best_pairs = [float(v) for v in scored.per_pair]
        return epoch - self.best_epoch >= self.patience

    def settle(self) -> None:
        """Keep the scored start unless the best trained epoch beats it by more than ``start_margin_se``
        standard errors of the paired gain (once; nothing to do without a start)."""
        if self.start_test is not None or self.start_pairs is None or self.best_epoch is None:
            return
        if self.best_epoch < 0:  # no trained epoch even scored higher
            self.start_test = {"epoch_by_value": 0, "gain": 0.0, "se": 0.0, "margin_se": self.start_margin_se,
                               "kept_start": True}
            return
        if self.best_pairs is None or len(self.best_pairs) != len(self.start_pairs):
            raise RuntimeError(f"early stopping: the start was scored on {len(self.start_pairs)} slice pairs and epoch "
                               f"{self.best_epoch + 1} on {len(self.best_pairs or [])}; the slice changed mid-run")
        gain, se = paired_gain(np.array(self.best_pairs), np.array(self.start_pairs))
        kept_start = not (gain > self.start_margin_se * se and gain > 0)
        self.start_test = {"epoch_by_value": self.best_epoch + 1, "gain": round(gain, 6), "se": round(se, 6),
                           "margin_se": self.start_margin_se, "kept_start": kept_start}
        if kept_start:
            self.best_epoch, self.best_value, self.best_state = -1, self.start_value, self.start_state
            self.best_pairs = self.start_pairs

    def dump(self) -> dict:
        """The state a checkpoint keeps (plain values and tensors: ``torch.load(weights_only=True)`` reads it)."""
        return {"format": self.FORMAT, "first": self.first, "curve": self.curve, "directions": self.directions, "best_epoch": self.best_epoch,
                "best_value": self.best_value, "best_state": self.best_state, "best_pairs": self.best_pairs,
                "start_pairs": self.start_pairs, "start_value": self.start_value, "start_state": self.start_state}

    def load(self, state: dict) -> None:
        self.first, self.curve = int(state["first"]), list(state["curve"])
        self.directions = {k: list(v) for k, v in state["directions"].items()}
        self.best_epoch, self.best_value, self.best_state = state["best_epoch"], float(state["best_value"]), state["best_state"]
        self.best_pairs, self.start_pairs = state["best_pairs"], state["start_pairs"]
        self.start_value, self.start_state = float(state["start_value"]), state["start_state"]

    def restore(self, binder: torch.nn.Module) -> None:
        """Settle the choice against the start and load the chosen epoch's weights into ``binder``."""
        self.settle()
        if self.best_state is not None:
            binder.load_state_dict(self.best_state)

    def report(self, stop: StopSlice) -> dict:
        return {"metric": "mean reciprocal rank of own-caption pairs, both directions, modalities weighted by pairs",
                "slice_rows": stop.rows, "slice_pairs": {m: len(a) for m, (a, _) in stop.pairs.items()},
                "epoch_chosen": self.best_epoch + 1 if self.best_epoch is not None else None,
                "first_epoch": self.first + 1, "curve": self.curve, "curve_by_direction": self.directions,
                "patience": self.patience, **({"start_test": self.start_test} if self.start_test is not None else {})}


def plot_curve(path: Path, report: dict, run: str) -> None:
    """A PNG of the validation curve with the chosen epoch marked (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.core.store import atomic_write

    epochs = np.arange(report["first_epoch"], report["first_epoch"] + len(report["curve"]))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(epochs, report["curve"], marker="o", markersize=3)
    if report["epoch_chosen"] is not None:
        ax.axvline(report["epoch_chosen"], color="k", linestyle="--", linewidth=1,
                   label=f"kept: epoch {report['epoch_chosen']}")
        ax.legend(fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MRR (training-side slice)")
    ax.set_title(f"run {run}: early stopping")
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
