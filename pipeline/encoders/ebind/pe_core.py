"""``pe-core-l14-336``: Perception Encoder Core L/14-336, EBind's image / text / video encoder.

ebind's own ``perception_encoder.pe`` model code (``VisionTransformer`` / ``TextTransformer``
with the ``PE-Core-L14-336`` configs, 1024-d) and its tokenizer (context 32). What ebind's
``models.py`` / ``transforms.py`` add needs torchvision and torchcodec, so it is here:

* image -- ``Resize(336)`` (bilinear, shorter side) and ``CenterCrop(336)``, mean = std = 0.5
  (ebind's ``PEImageProcessor``);
* video -- each decoded frame squashed to 336 x 336 (bicubic), the same normalisation (ebind's
  ``VideoTransform``); the clip's feature is the mean of its unnormalised frame features (ebind's
  ``encode_video``), which the store then L2-normalises: ``unit(mean of 8 frames)``.
  Frames come from bindery's video decoder (``frames`` sampled uniformly over the clip); ebind
  samples at 1 fps first, then uniformly: the same frames for clips of up to 8 s.

Outputs are the raw projected features; the manifest's ``normalize = true`` (the default)
gives ebind's ``encode_image`` / ``encode_text`` / ``encode_video`` exactly. Weights: the
pinned ``facebook/PE-Core-L14-336`` checkpoint, loaded with ebind's own ``load_ckpt``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from pipeline.encoders.base import Batch, Encoder, EncoderError
from pipeline.encoders.ebind.common import INPUT, BackboneEncoder, build_backbone
from pipeline.encoders.image_transform import ImageTransform
from pipeline.encoders.thirdparty import ebind_module
from pipeline.encoders.weights import HubFile
from pipeline.encoders.wrappers import FramesPreprocessor, PooledImageEncoder

CONFIG = "PE-Core-L14-336"
HUB = HubFile("facebook/PE-Core-L14-336", "PE-Core-L14-336.pt", "bafb0f76541d399057e980a25947f67acec76575")
HALF = (0.5, 0.5, 0.5)


class PixelsPreprocessor:
    def __init__(self, transform: ImageTransform):
        self.transform = transform

    def __call__(self, images: list[Any]) -> Batch:
        return {INPUT: self.transform.batch(images)}


class TokensPreprocessor:
    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, texts: list[str]) -> Batch:
        return {INPUT: self.tokenizer(list(texts)).long()}


def _load(model: torch.nn.Module, path: Path) -> None:
    model.load_ckpt(str(path))  # ebind's loader: the visual.* or the text entries of the one checkpoint


# image and video of one run share the vision tower (one copy in memory): keyed by the weights setting
_VISION: dict[str, tuple[torch.nn.Module, str]] = {}


def _vision(modality: str, config: Any, transform: ImageTransform) -> BackboneEncoder:
    pe, cfg = ebind_module("models.perception_encoder.pe"), ebind_module("models.perception_encoder.config")
    vision = cfg.PE_VISION_CONFIG[CONFIG]
    setting = getattr(config, "weights", "")
    if setting not in _VISION:
        _VISION[setting] = build_backbone(modality, config, HUB, lambda: pe.VisionTransformer(**asdict(vision)), _load)
    model, weights = _VISION[setting]
    info = {"model": f"{CONFIG} vision (ebind.models.perception_encoder)", **transform.info()}
    return BackboneEncoder("image", config.encoder, model, PixelsPreprocessor(transform), vision.output_dim,
                           weights, info)


def initialised_text_tower(pe: Any, text: Any) -> torch.nn.Module:
    """ebind's ``TextTransformer``, its tensors initialised. ebind leaves the positional embedding, the
    projection and the attention weights as ``torch.empty`` (a checkpoint overwrites them; random weights
    must not be uninitialised memory): the vision tower's ``init_tensors`` walk, then CLIP's normal inits."""
    model = pe.TextTransformer(**asdict(text))
    for module in model.modules():
        if module is not model and hasattr(module, "init_tensors"):
            module.init_tensors()
    torch.nn.init.normal_(model.positional_embedding, std=0.01)
    if isinstance(model.text_projection, torch.nn.Parameter):
        torch.nn.init.normal_(model.text_projection, std=text.width ** -0.5)
    return model


def _text(config: Any) -> BackboneEncoder:
    pe, cfg = ebind_module("models.perception_encoder.pe"), ebind_module("models.perception_encoder.config")
    tokenizer = ebind_module("models.perception_encoder.tokenizer")
    text = cfg.PE_TEXT_CONFIG[CONFIG]
    model, weights = build_backbone("text", config, HUB, lambda: initialised_text_tower(pe, text), _load)
    pre = TokensPreprocessor(tokenizer.SimpleTokenizer(context_length=text.context_length))
    info = {"model": f"{CONFIG} text (ebind.models.perception_encoder)", "context_length": text.context_length}
    return BackboneEncoder("text", config.encoder, model, pre, text.output_dim, weights, info)


def build(modality: str, config: Any) -> Encoder:
    size = ebind_module("models.perception_encoder.config").PE_VISION_CONFIG[CONFIG].image_size
    if modality == "image":
        return _vision(modality, config, ImageTransform(size, HALF, HALF, "shortest", "bilinear"))
    if modality == "text":
        return _text(config)
    if modality == "video":
        frames = ImageTransform(size, HALF, HALF, "squash", "bicubic")
        image = _vision(modality, config, frames)
        info = {"pooling": "mean of unnormalised frame features", "frames": config.frames, **frames.info()}
        video = PooledImageEncoder("video", image, FramesPreprocessor(image.preprocessor()), info)
        video.weights = image.weights
        return video
    raise EncoderError(f"modalities.{modality}.encoder: pe-core-l14-336 serves image, text and video; "
                       "EBind encodes points with uni3d-g and audio with imagebind-huge-audio")
