"""The worker's half of device JPEG decoding (``[modalities.image] decode`` resolved to ``device``).

The worker does only the cheap checks that need no pixels: the header is read lazily
(:func:`~pipeline.ingest.decode.image.open_checked`: the format, ``max_pixels`` and the
truncated-JPEG rule, with today's statuses and messages). A plain JPEG -- YCbCr/RGB, a
sequential Huffman frame -- then leaves the worker as its raw bytes (:class:`JpegBytes`), to be
decoded in a batch on the GPU (:mod:`pipeline.precompute.jpeg_device`). Everything else --
CMYK/YCCK, greyscale, progressive or arithmetic-coded JPEGs, MPO, PNG, WebP -- is decoded here
exactly as on the CPU path, so it keeps today's behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.ingest.decode.image import _jpeg_frame_marker, decode_opened, open_checked

DEVICE_FRAMES = {0xC0, 0xC1}  # baseline and extended sequential Huffman: what nvJPEG's batched decode takes


@dataclass(frozen=True)
class JpegBytes:
    """A JPEG member whose header passed the worker's checks, still encoded."""

    data: bytes
    ext: str  # the member's extension (for the fallback's messages)
    size: tuple[int, int]  # (width, height) from the frame header


def route_image(data: bytes, ext: str, cfg: Any, min_side: int = 0) -> Any:
    """:class:`JpegBytes` for a JPEG the device decodes, else the image decoded as on the CPU path."""
    img = open_checked(data, ext, cfg)
    if img.format == "JPEG" and img.mode == "RGB" and _jpeg_frame_marker(data) in DEVICE_FRAMES:
        return JpegBytes(data, ext, img.size)
    return decode_opened(img, cfg, min_side)
