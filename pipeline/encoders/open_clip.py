"""``open_clip:<architecture>[@<pretrained tag or local checkpoint>]``: open_clip models as encoders.

* image -- ``model.encode_image`` on the model's own eval transform (its ``preprocess_cfg``:
  size, mean, std, interpolation, resize mode), re-expressed without torchvision in
  :mod:`pipeline.encoders.image_transform`;
* text -- ``model.encode_text`` on the model's own tokenizer (``open_clip.get_tokenizer``);
* video and points -- through the image tower (:mod:`pipeline.encoders.wrappers`).

The architecture is any name ``open_clip.list_models()`` knows (every CLIP / SigLIP /
PE-Core config ships with the package) or the path of a model-config JSON, registered with
``open_clip.add_model_config``. Weights: ``@<tag>`` (fetched by open_clip from the hub, or its
cache), ``@/path/to/checkpoint`` or ``[modalities.<m>] weights = "/path"`` (a local file, read
offline), or ``weights = "random"``. A name without any of these is refused: open_clip would
build random weights silently. Needs ``pip install 'bindery[open_clip]'``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pipeline.encoders.base import Batch, Encoder, EncoderError
from pipeline.encoders.image_transform import ImageTransform
from pipeline.encoders.thirdparty import import_without_torchvision
from pipeline.encoders.weights import RANDOM, seeded

log = logging.getLogger(__name__)
PREFIX = "open_clip:"


def _open_clip():
    return import_without_torchvision("open_clip", "open_clip")


def parse_spec(spec: str) -> tuple[str, str]:
    """``open_clip:ARCH@PRETRAINED`` -> (ARCH, PRETRAINED or "")."""
    body = spec[len(PREFIX):]
    arch, _, pretrained = body.partition("@")
    if not arch:
        raise EncoderError(f"encoder {spec!r}: name an architecture, e.g. open_clip:ViT-B-32@openai")
    return arch, pretrained


def _architecture(arch: str, modality: str) -> str:
    """The registered config name; a JSON path is registered first (its file stem is the name)."""
    oc = _open_clip()
    path = Path(arch)
    if arch.endswith(".json"):
        if not path.is_file():
            raise EncoderError(f"modalities.{modality}.encoder: model config {path} not found")
        oc.add_model_config(path)
        return path.stem
    if arch not in oc.list_models():
        raise EncoderError(f"modalities.{modality}.encoder: open_clip has no architecture {arch!r}; "
                           "see open_clip.list_models(), or give the path of a model-config JSON")
    return arch


def _pretrained(modality: str, config: Any, tag: str) -> str | None:
    weights = getattr(config, "weights", "")
    if weights == RANDOM:
        if tag:
            raise EncoderError(f"modalities.{modality}.weights: \"random\" contradicts @{tag} in the encoder spec; "
                               "drop one of them")
        return None
    if weights and tag:
        raise EncoderError(f"modalities.{modality}.weights: {weights!r} and @{tag} both name weights; keep one")
    chosen = weights or tag
    if not chosen:
        raise EncoderError(f"modalities.{modality}.encoder: {config.encoder!r} names no weights: add "
                           "@<pretrained tag> or @/path/to/checkpoint, or set weights = \"random\" explicitly")
    return chosen


class TokenizePreprocessor:
    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, texts: list[str]) -> Batch:
        return {"input_ids": self.tokenizer(list(texts)).long()}


class PixelsPreprocessor:
    def __init__(self, transform: ImageTransform):
        self.transform = transform

    def __call__(self, images: list[Any]) -> Batch:
        return {"pixel_values": self.transform.batch(images)}


def image_transform(model: Any) -> ImageTransform:
    cfg = _open_clip().get_model_preprocess_cfg(model)
    size = cfg["size"][0] if isinstance(cfg["size"], list | tuple) else cfg["size"]
    return ImageTransform(int(size), tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("resize_mode", "shortest"),
                          cfg.get("interpolation", "bicubic"))


class OpenClipEncoder(Encoder):
    def __init__(self, modality: str, name: str, model: torch.nn.Module, preprocess: Any, weights: str,
                 info: dict[str, Any]):
        self.modality, self.name, self.model, self._pre = modality, name, model, preprocess
        self.weights, self.info = weights, info
        self.dim = int(getattr(model, "embed_dim", 0) or self._probe())

    def _probe(self) -> int:
        example = ["a photo"] if self.modality == "text" else None
        if example is None:
            from PIL import Image

            example = [Image.new("RGB", (32, 32), (127, 127, 127))]
        with torch.no_grad():
            return int(self.encode(self._pre(example)).shape[-1])

    def preprocessor(self):
        return self._pre

    def encode(self, batch: Batch) -> torch.Tensor:
        if self.modality == "text":
            return self.model.encode_text(batch["input_ids"])
        return self.model.encode_image(batch["pixel_values"])

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def provenance(self) -> dict[str, Any]:
        return dict(self.info)


def build(modality: str, config: Any) -> Encoder:
    """The open_clip model ``config.encoder`` names, serving ``modality`` (image or text)."""
    if modality not in ("image", "text"):
        raise EncoderError(f"modalities.{modality}.encoder: open_clip models serve image and text; "
                           f"{modality} goes through the image tower")
    oc = _open_clip()
    arch_spec, tag = parse_spec(config.encoder)
    arch = _architecture(arch_spec, modality)
    pretrained = _pretrained(modality, config, tag)
    try:
        with seeded():
            model = oc.create_model(arch, pretrained=pretrained, device="cpu")
    except Exception as exc:
        raise EncoderError(f"modalities.{modality}.encoder: cannot build {config.encoder!r} with pretrained="
                           f"{pretrained!r} ({type(exc).__name__}: {exc}); a tag needs the hub or its cache, "
                           "a path must be a checkpoint of this architecture") from None
    model.eval().requires_grad_(False)
    if modality == "text":
        pre, info = TokenizePreprocessor(oc.get_tokenizer(arch)), {"context_length": model.context_length}
    else:
        transform = image_transform(model)
        pre, info = PixelsPreprocessor(transform), transform.info()
    weights = RANDOM if pretrained is None else pretrained
    enc = OpenClipEncoder(modality, config.encoder, model, pre, weights, {"architecture": arch, **info})
    log.info("open_clip encoder %s for %s: dim %d, weights %s", arch, modality, enc.dim, weights)
    return enc
