"""``imagebind-huge-audio``: ImageBind-huge's audio tower, as EBind runs it (1024-d).

The model is ebind's ``ImageBindAudioEncoder`` (its own code, unchanged): patch embedding of
the 128 x 204 fbank, 12 transformer blocks, the head, then ImageBind's postprocessor
``unit(x) * 20`` per clip, averaged over the 3 clips. That average is what EBind's audio
projector takes, so ``manifests/ebind.toml`` stores it as it is (``normalize = false``).
Preprocessing: :mod:`pipeline.encoders.ebind.fbank` (16 kHz). Weights: the audio entries of
``nielsr/imagebind-huge``'s ``model.safetensors`` (ebind's ``filter_state_dict`` keeps them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.encoders.base import Encoder, EncoderError
from pipeline.encoders.ebind.common import BackboneEncoder, build_backbone
from pipeline.encoders.ebind.fbank import ImageBindAudioPreprocessor
from pipeline.encoders.thirdparty import ebind_module
from pipeline.encoders.weights import HubFile

HUB = HubFile("nielsr/imagebind-huge", "model.safetensors", "51fc1ff707903501e60bdb2f73dd4e8818eef099")
RATE = 16000


def _load(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    module = ebind_module("models.imagebind.imagebind_model")
    state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
    audio = module.ImageBindAudioEncoder.filter_state_dict(state) or state  # full ImageBind, or the tower alone
    try:
        model.load_state_dict(audio)
    except RuntimeError as exc:
        raise EncoderError(f"weights: {path} is not an ImageBind-huge checkpoint ({str(exc)[:300]})") from None


def build(modality: str, config: Any) -> Encoder:
    if modality != "audio":
        raise EncoderError(f"modalities.{modality}.encoder: imagebind-huge-audio serves audio only")
    module = ebind_module("models.imagebind.imagebind_model")
    model, weights = build_backbone(modality, config, HUB, module.ImageBindAudioEncoder, _load)
    pre = ImageBindAudioPreprocessor(rate=RATE)
    info = {"model": "ImageBind-huge audio tower (ebind.models.imagebind)", "num_mel_bins": pre.num_bins,
            "target_length": pre.target_length, "clip_seconds": pre.clip_seconds, "clips": pre.clips,
            "output": "mean over clips of unit(x) * 20 (ImageBind's postprocessor)"}
    return BackboneEncoder(modality, config.encoder, model, pre, 1024, weights, info, sample_rate=RATE)
