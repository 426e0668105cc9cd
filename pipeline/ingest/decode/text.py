"""Captions: UTF-8 text within ``max_chars``."""

from __future__ import annotations

from typing import Any

from pipeline.ingest.decode.base import DecodeError


def decode_text(data: bytes, ext: str, cfg: Any) -> str:
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DecodeError("corrupt", f"text: not UTF-8: {exc}") from None
    if len(text) > cfg.max_chars:
        raise DecodeError("error", f"text: {len(text)} characters exceed max_chars={cfg.max_chars}")
    if not text:
        raise DecodeError("error", "text: empty caption")
    return text
