"""Frozen encoders behind a registry: see :mod:`pipeline.encoders.registry`."""

from pipeline.encoders.base import Encoder, EncoderError
from pipeline.encoders.registry import build_encoder, register

__all__ = ["Encoder", "EncoderError", "build_encoder", "register"]
