"""The loss registry: ``[train] loss`` names one of :data:`LOSSES`."""

from __future__ import annotations

from torch import nn

from pipeline.core.manifest import ManifestError
from trainer.losses.infonce import BindLoss

LOSSES: dict[str, type[nn.Module]] = {"infonce": BindLoss}


def make_loss(name: str, **kwargs) -> nn.Module:
    """The registered loss ``name`` built with ``kwargs``; an unknown name is a ManifestError naming train.loss."""
    if name not in LOSSES:
        raise ManifestError(f"train.loss: {name!r} is not a registered loss; use one of {', '.join(LOSSES)}")
    return LOSSES[name](**kwargs)
