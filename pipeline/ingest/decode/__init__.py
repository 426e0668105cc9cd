"""Decode one sample's members into what encoders take, within the manifest's limits.

One table, :data:`DECODERS`, maps each modality to a decoder with one signature,
``decode(data, ext, cfg, context) -> item``, where ``context`` carries what some decoders need
beyond the bytes (the sample key for a deterministic sub-sample, the encoder's sample rate).
A decoder raises :class:`DecodeError` carrying the status (``corrupt`` for undecodable data,
``error`` for anything else, limits included); :func:`decode_member` finds the member by
extension and turns an absent one into ``missing``, a member the shard reader did not read
(over the member limit) into ``error``, a key repeated within its shard into ``duplicate``, and
a MemoryError while decoding into ``error``: one sample's status row, never the end of the job.
The item types are in :mod:`pipeline.encoders.base`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.ingest.decode.audio import decode_audio
from pipeline.ingest.decode.base import EXTENSIONS, DecodeError
from pipeline.ingest.decode.image import decode_image
from pipeline.ingest.decode.jpeg_route import route_image
from pipeline.ingest.decode.points import decode_points
from pipeline.ingest.decode.text import decode_text
from pipeline.ingest.decode.video import decode_video
from pipeline.ingest.shards import DUPLICATE, SkippedMember

__all__ = ["DECODERS", "DEVICE_DECODERS", "EXTENSIONS", "DecodeContext", "DecodeError", "decode_audio", "decode_image", "decode_member",
           "decode_points", "decode_text", "decode_video", "find_member"]


@dataclass(frozen=True)
class DecodeContext:
    """What a decoder may need besides the member's bytes."""

    key: str  # the sample's key
    sample_rate: int = 16_000  # the audio encoder's rate
    image_side: int = 0  # the short side the image encoder resizes to (JPEG draft decoding); 0 = full


def _points_seed(key: str) -> int:
    """A per-sample seed from the key, so reruns sub-sample a cloud the same way."""
    return int.from_bytes(key.encode()[-8:].rjust(8, b"\0"), "little")


Decoder = Callable[[bytes, str, Any, DecodeContext], Any]

DECODERS: dict[str, Decoder] = {
    "image": lambda data, ext, cfg, ctx: decode_image(data, ext, cfg, ctx.image_side),
    "text": lambda data, ext, cfg, ctx: decode_text(data, ext, cfg),
    "video": lambda data, ext, cfg, ctx: decode_video(data, ext, cfg),
    "audio": lambda data, ext, cfg, ctx: decode_audio(data, ext, cfg, ctx.sample_rate),
    "points": lambda data, ext, cfg, ctx: decode_points(data, ext, cfg, seed=_points_seed(ctx.key)),
}

# ``[modalities.image] decode`` on the device: plain JPEGs stay encoded (jpeg_route), the rest as above
DEVICE_DECODERS: dict[str, Decoder] = {
    **DECODERS, "image": lambda data, ext, cfg, ctx: route_image(data, ext, cfg, ctx.image_side),
}


def find_member(sample: dict[str, Any], modality: str) -> tuple[str, bytes] | None:
    for ext in EXTENSIONS[modality]:
        if ext in sample:
            return ext, sample[ext]
    return None


def decode_member(sample: dict[str, Any], modality: str, cfg: Any, sample_rate: int | None = None,
                  image_side: int = 0, decoders: dict[str, Decoder] = DECODERS):
    """The decoded item of ``modality`` in ``sample``; DecodeError (status, message) when there is none.
    ``decoders``: :data:`DEVICE_DECODERS` leaves plain JPEGs encoded for the GPU."""
    if modality not in decoders:
        raise ValueError(f"unknown modality {modality!r}")
    key = str(sample["__key__"])
    if DUPLICATE in sample:
        raise DecodeError("duplicate", f"duplicate key {key!r}: first seen in shard {sample[DUPLICATE]}")
    found = find_member(sample, modality)
    if found is None:
        raise DecodeError("missing", f"{modality}: no {'/'.join(EXTENSIONS[modality])} member")
    ext, data = found
    if isinstance(data, SkippedMember):
        raise DecodeError("error", f"{modality}: {data.reason}")
    try:
        return decoders[modality](data, ext, cfg, DecodeContext(key, sample_rate or 16_000, image_side))
    except MemoryError:
        raise DecodeError("error", f"{modality}: out of memory while decoding the {ext} member "
                                   f"({len(data)} bytes); lower this modality's limits") from None
