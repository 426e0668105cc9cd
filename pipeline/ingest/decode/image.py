"""Images: Pillow with only the member's own format, the pixel limit checked from the header.

* Pillow tries only the format(s) the extension names (:data:`FORMATS`): a ``.jpg`` that is
  really EPS is never handed to the EPS plugin (which runs Ghostscript where it is installed).
* ``max_pixels`` governs: Pillow's own bomb limit is set from it, and its bomb error is the same
  ``error`` status as bindery's own check, which reads the size from the header before decoding.
* A JPEG whose data ends long before its declared size is ``corrupt``: libjpeg would fill the
  missing rows with grey and call it a picture. A Huffman-coded JPEG spends at least one bit on
  each 8x8 block of its full-resolution component, so a file of fewer than ``width * height /
  512`` bytes cannot hold the picture its frame header declares.
* Transparency (RGBA, LA, PA, palette or RGB/L with a ``transparency`` entry) is composited onto
  ``[modalities.image] background`` (:func:`flatten_alpha`), never dropped.
* With ``min_side`` (the short side the encoder's preprocessing resizes to), a JPEG is decoded
  in Pillow's draft mode: libjpeg scales it by 1/2, 1/4 or 1/8 in the DCT domain, to the smallest
  size whose short side is still >= ``min_side``, so the preprocessor's one resize starts from
  fewer pixels and the IDCT does less work. The other formats decode in full.
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Any

from pipeline.ingest.decode.base import DecodeError

FORMATS: dict[str, tuple[str, ...]] = {"jpg": ("JPEG",), "jpeg": ("JPEG",), "png": ("PNG",), "webp": ("WEBP",)}
HUFFMAN_FRAMES = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman-coded frames


def flatten_alpha(img: Any, background: str) -> Any:
    """``img`` as RGB with any transparency composited onto ``background`` (a Pillow colour name or
    ``#rrggbb``). RGBA, LA, PA and palette or RGB/L images carrying a ``transparency`` entry keep their
    shape; ``convert("RGB")`` alone would drop the alpha and show the hidden (often black) pixels."""
    from PIL import Image, ImageColor

    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")  # palette/L/RGB transparency becomes a real alpha channel
        canvas = Image.new("RGBA", rgba.size, ImageColor.getrgb(background) + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def _jpeg_frame_marker(data: bytes) -> int | None:
    """The SOFn marker of a JPEG (walking the segments up to the first scan), or None."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker
        if marker == 0xDA:
            return None
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return None


def _check_jpeg_length(data: bytes, w: int, h: int) -> None:
    needed = w * h // 512  # one bit per 8x8 block
    if _jpeg_frame_marker(data) in HUFFMAN_FRAMES and len(data) < needed:
        raise DecodeError("corrupt", f"image: JPEG data ends before its declared {w}x{h}: {len(data)} bytes, "
                                     f"a picture of that size needs at least {needed}")


def _open(data: bytes, ext: str, max_pixels: int):
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow warns past it and refuses past twice it
    formats = FORMATS.get(ext)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:
        raise DecodeError("error", f"image: exceeds max_pixels={max_pixels} ({exc})") from None
    except Exception as exc:
        allowed = "/".join(formats or ())
        raise DecodeError("corrupt", f"image: cannot read a {allowed} header from the .{ext} member: "
                                     f"{type(exc).__name__}: {exc}") from None
    return img


def open_checked(data: bytes, ext: str, cfg: Any):
    """The lazily opened image (header only, no pixels decoded) once the limits pass: ``max_pixels``
    (``error``) and, for a JPEG, the data-length rule (``corrupt``)."""
    img = _open(data, ext, cfg.max_pixels)
    w, h = img.size  # header only: the limits are checked before the pixels are decoded
    if w * h > cfg.max_pixels:
        raise DecodeError("error", f"image: exceeds max_pixels={cfg.max_pixels} ({w}x{h} = {w * h} pixels)")
    if img.format in ("JPEG", "MPO"):
        _check_jpeg_length(data, w, h)
    return img


def decode_opened(img: Any, cfg: Any, min_side: int = 0):
    """The pixels of an image from :func:`open_checked`, as RGB (draft-decoded JPEG with ``min_side``)."""
    if min_side and img.format == "JPEG":
        img.draft("RGB", (min_side, min_side))  # the scale is bounded by the short side
    try:
        return flatten_alpha(img, getattr(cfg, "background", "white"))
    except Exception as exc:
        raise DecodeError("corrupt", f"image: cannot decode: {type(exc).__name__}: {exc}") from None


def decode_image(data: bytes, ext: str, cfg: Any, min_side: int = 0):
    return decode_opened(open_checked(data, ext, cfg), cfg, min_side)
