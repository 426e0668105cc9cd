"""The typed batch that flows data -> model -> loss: one :class:`ModalityBatch` per projected modality.

:class:`Batch` is what :meth:`trainer.data.rows.CachedData.batch` gathers (stored vectors, cast to
float32), :class:`Features` what :class:`trainer.model.heads.Binder` returns (the same fields in the
anchor space, L2-normalised, plus the logit scale) and :class:`trainer.losses.infonce.BindLoss` reads.
Every modality's side is row-aligned with the anchor: row ``i`` of each field belongs to anchor ``i``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModalityBatch:
    """One projected modality's side of a batch.

    ``bad``/``bad_mask`` are present only when the rows carry human-rated bad partners (an explicit
    hard negative of that row's anchor); they go through the same head as ``vectors``.
    """

    vectors: torch.Tensor  # (B, d) partner vectors, zeros where the row has none
    mask: torch.Tensor  # (B,) bool: the row has a partner in this modality
    weight: torch.Tensor  # (B,) loss weight of the (anchor, partner) pair (partial ratings < 1)
    bad: torch.Tensor | None = None  # (B, d) rated bad partner vectors, zeros where none
    bad_mask: torch.Tensor | None = None  # (B,) bool: the row has a rated bad partner
    raw: torch.Tensor | None = None  # (B, d_anchor) in Features only: the head's output before L2-normalising

    def __post_init__(self) -> None:
        if (self.bad is None) != (self.bad_mask is None):
            raise ValueError("ModalityBatch: bad and bad_mask come together")

    def to(self, device: torch.device) -> ModalityBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)
        return ModalityBatch(move(self.vectors), move(self.mask), move(self.weight), move(self.bad),
                             move(self.bad_mask), move(self.raw))

    def replace(self, **changes) -> ModalityBatch:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Batch:
    """Anchor vectors plus each projected modality's :class:`ModalityBatch`."""

    anchor: torch.Tensor  # (B, d_anchor)
    modalities: dict[str, ModalityBatch]

    def to(self, device: torch.device) -> Batch:
        return Batch(self.anchor.to(device, non_blocking=True), {m: s.to(device) for m, s in self.modalities.items()})

    def keep_rows(self, valid: torch.Tensor) -> Batch:
        """The batch with rows outside ``valid`` (bool, (B,)) taking part in no pair (padding rows)."""
        valid = valid.to(self.anchor.device)
        return Batch(self.anchor, {m: s.replace(mask=s.mask & valid) for m, s in self.modalities.items()})


@dataclass(frozen=True)
class Features(Batch):
    """A :class:`Batch` projected into the anchor space (every vector L2-normalised) + the logit scale."""

    scale: torch.Tensor  # () learnable temperature, exp(logit_scale) clamped
