"""Images: Pillow, the pixel limit checked from the header before decoding."""

from __future__ import annotations

import io
from typing import Any

from pipeline.ingest.decode.base import DecodeError


def decode_image(data: bytes, ext: str, cfg: Any):
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size  # header only: the limit is checked before the pixels are decoded
    except Exception as exc:
        raise DecodeError("corrupt", f"image: cannot read header: {exc}") from None
    if w * h > cfg.max_pixels:
        raise DecodeError("error", f"image: {w}x{h} exceeds max_pixels={cfg.max_pixels}")
    try:
        return img.convert("RGB")
    except Exception as exc:
        raise DecodeError("corrupt", f"image: cannot decode: {exc}") from None
