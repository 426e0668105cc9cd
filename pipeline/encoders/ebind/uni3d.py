"""``uni3d-g``: Uni3D giant, EBind's point-cloud encoder (1024-d ``pc_feat``).

ebind's own ``Uni3D`` / ``PointcloudEncoder`` (512 groups of 64 points: furthest point sampling
and kNN, a mini-PointNet per group, then the 40 blocks of timm's ``eva_giant_patch14_560``
and ``trans2embed``) with the ``UNI3D_DEFAULT_ARGS`` EBind pins. timm is imported without
torchvision (:mod:`pipeline.encoders.thirdparty`); on the CPU ebind's own torch fallback does
the furthest point sampling (:mod:`pipeline.encoders.ebind.pointnet2`).

Input per cloud: ``(points, 6)`` xyz + rgb in [0, 1]; clouds without colour get Uni3D's grey
0.4 (its loaders' default). The output is the raw ``pc_feat``, which EBind's points projector
takes unnormalised (``normalize = false`` in ``manifests/ebind.toml``). Weights: the
``module`` entry of ``BAAI/Uni3D``'s ``modelzoo/uni3d-g-no-lvis/model.pt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.encoders.base import Batch, Encoder, EncoderError
from pipeline.encoders.ebind.common import INPUT, BackboneEncoder, build_backbone
from pipeline.encoders.thirdparty import ebind_module, import_without_torchvision
from pipeline.encoders.weights import HubFile

HUB = HubFile("BAAI/Uni3D", "modelzoo/uni3d-g-no-lvis/model.pt", "a3c608009053a821e51d9fb9a73b9a11c259a591")
GREY = 0.4  # Uni3D's colour for clouds that have none


class CloudsPreprocessor:
    """Clouds of equal size (the decoder sub-samples to ``points``) -> ``{"input": (B, N, 6)}``."""

    def __call__(self, clouds: list[np.ndarray]) -> Batch:
        out = []
        for cloud in clouds:
            cloud = np.asarray(cloud, dtype=np.float32)
            rgb = cloud[:, 3:6] if cloud.shape[1] >= 6 else np.full((len(cloud), 3), GREY, np.float32)
            out.append(torch.from_numpy(np.concatenate([cloud[:, :3], rgb], axis=1)))
        sizes = {len(c) for c in out}
        if len(sizes) > 1:
            raise ValueError(f"uni3d-g: clouds of different sizes in one batch {sorted(sizes)}")
        return {INPUT: torch.stack(out)}


def make_uni3d(args: dict[str, Any] | None = None) -> torch.nn.Module:
    """ebind's Uni3D with its default arguments (``args`` overrides them: tests build a small one)."""
    timm = import_without_torchvision("timm", "ebind")
    uni3d = ebind_module("models.uni3d.uni3d")
    point_encoder = ebind_module("models.uni3d.point_encoder")
    args = {**uni3d.UNI3D_DEFAULT_ARGS, **(args or {})}
    extra = {k: args.pop(k) for k in ("depth", "num_heads", "embed_dim_eva", "mlp_ratio") if k in args}
    kwargs = {"depth": extra["depth"], "num_heads": extra["num_heads"], "embed_dim": extra["embed_dim_eva"],
              "mlp_ratio": extra["mlp_ratio"]} if extra else {}
    transformer = timm.create_model(args["pc_model"], checkpoint_path=args["pretrained_pc"],
                                    drop_path_rate=args["drop_path_rate"], **kwargs)
    return uni3d.Uni3D(point_encoder=point_encoder.PointcloudEncoder(transformer, args))


def _load(model: torch.nn.Module, path: Path) -> None:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(ckpt["module"] if "module" in ckpt else ckpt)  # strict, as ebind loads it
    except RuntimeError as exc:
        raise EncoderError(f"weights: {path} is not a Uni3D-g checkpoint ({str(exc)[:300]})") from None


def build(modality: str, config: Any) -> Encoder:
    if modality != "points":
        raise EncoderError(f"modalities.{modality}.encoder: uni3d-g serves points only")
    model, weights = build_backbone(modality, config, HUB, make_uni3d, _load)
    info = {"model": "Uni3D-g (ebind.models.uni3d, timm eva_giant_patch14_560)", "groups": 512, "group_size": 64,
            "colour_when_absent": GREY, "output": "raw pc_feat"}
    return BackboneEncoder(modality, config.encoder, model, CloudsPreprocessor(), 1024, weights, info)
