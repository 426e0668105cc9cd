"""What the training loop (:mod:`trainer.train`) calls when ``train.bridge`` names a bridge.

A bridge run trains two sets of heads on the same rows, in this order:

1. the emergent route (``bridge.emergent``, on by default): pivot terms only, the pseudo partners
   left out, into ``runs/<run>-emergent/``: bindery's usual recipe on exactly these items, the
   reference the eval's ``bridge`` section compares against;
2. the MOX heads into ``runs/<run>/``: the same rows with their pseudo partners,
   :class:`~trainer.bridge.loss.BridgeLoss`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from pipeline.core.manifest import Manifest
from trainer.bridge.data import BridgeData, check_bridge, load_bridge, read_bridge_config
from trainer.bridge.loss import BridgeLoss

EMERGENT_SUFFIX = "-emergent"


def emergent_run(run: str) -> str:
    """The emergent route's run name for the MOX run ``run``."""
    return f"{run}{EMERGENT_SUFFIX}"


def check(manifest: Manifest) -> None:
    """``train.bridge`` against the bridge it names and the current stores (a ManifestError otherwise)."""
    check_bridge(manifest.train, manifest.layout, read_bridge_config(manifest.layout, manifest.train.bridge))


def trains_emergent(manifest: Manifest, pivot_only: bool) -> bool:
    return bool(manifest.train.bridge) and not pivot_only and manifest.bridge.emergent


def emergent_manifest(manifest: Manifest) -> Manifest:
    return dataclasses.replace(manifest, train=dataclasses.replace(manifest.train,
                                                                   run=emergent_run(manifest.train.run)))


def load_data(manifest: Manifest, device: torch.device, pivot_only: bool) -> BridgeData:
    return load_bridge(manifest.train, manifest.layout, device, pseudo=not pivot_only)


def wrap_loss(loss_fn: nn.Module, manifest: Manifest, data: BridgeData, pivot_only: bool) -> nn.Module:
    """The ordinary loss (pivot terms) for the emergent route; with the MOX and CyCLIP terms otherwise."""
    if pivot_only:
        return loss_fn
    a, c = data.split.a, data.split.c
    return BridgeLoss(loss_fn, a, c, manifest.bridge, gather=manifest.train.gather)


def summary(manifest: Manifest, data: BridgeData, pivot_only: bool, emergent: dict[str, Any] | None) -> dict:
    role = "emergent" if pivot_only else "mox"
    out: dict[str, Any] = {"name": manifest.train.bridge, "role": role, **data.split.sizes()}
    if emergent is not None:
        out["emergent_run"] = emergent["run"]
    return {"bridge": out}
