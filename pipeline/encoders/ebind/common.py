"""What the three EBind backbones share: one tensor in, features out, weights from one source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pipeline.encoders.base import Batch, Encoder, EncoderError
from pipeline.encoders.weights import RANDOM, HubFile, resolve, seeded

INPUT = "input"  # the batch entry every backbone here takes


class BackboneEncoder(Encoder):
    """``model(batch["input"])`` -> (B, dim) features."""

    def __init__(self, modality: str, name: str, model: torch.nn.Module, preprocess: Any, dim: int,
                 weights: str, info: dict[str, Any], sample_rate: int | None = None):
        self.modality, self.name, self.model, self._pre, self.dim = modality, name, model, preprocess, dim
        self.weights, self.info, self.sample_rate = weights, info, sample_rate

    def preprocessor(self):
        return self._pre

    def encode(self, batch: Batch) -> torch.Tensor:
        return self.model(batch[INPUT])

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def provenance(self) -> dict[str, Any]:
        return {**self.info, "weights": self.weights}


def build_backbone(modality: str, config: Any, hub: HubFile, make: Callable[[], torch.nn.Module],
                   load: Callable[[torch.nn.Module, Path], None]) -> tuple[torch.nn.Module, str]:
    """(the frozen model, what its weights are): built seeded, then loaded unless weights are random."""
    path = resolve(modality, getattr(config, "weights", ""), hub, config.encoder)
    with seeded():
        model = make()
    if path is not None:
        load(model, path)
    bad = [n for n, t in model.named_parameters() if not torch.isfinite(t).all()]
    if bad:  # uninitialised tensors of a random build, or a damaged checkpoint
        raise EncoderError(f"modalities.{modality}.weights: {config.encoder} has non-finite weights in "
                           f"{', '.join(bad[:5])}{'...' if len(bad) > 5 else ''}")
    return model.eval().requires_grad_(False), RANDOM if path is None else str(path)
