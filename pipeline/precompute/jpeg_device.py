"""The main process's half of device JPEG decoding: a :class:`JpegBatch` -> uint8 crops on the device.

:class:`TorchvisionJpeg` decodes the batch with one ``torchvision.io.decode_jpeg(..., device=cuda)``
call (nvJPEG), then resizes and centre-crops each image on the device with the worker's geometry
(:func:`~pipeline.encoders.image_prep.resize_crop_on_device`: the processor's filter, antialiased,
as Pillow's); the encoder's own ``prepare`` normalises, as on the CPU path. Pixels differ from the
worker's by a few levels: the worker draft-decodes (libjpeg scales in the DCT domain) and resizes
with Pillow, the device decodes in full and resizes with torch.

:class:`DeviceJpegStep` makes failures item-sized: if the batched call raises, each item is tried on
its own; an item the device cannot decode is decoded by :class:`PillowJpeg` -- the worker's CPU path,
the same pixels -- and an item Pillow cannot decode either becomes the status row the worker would
have written (:func:`~pipeline.precompute.loader.status_row`), handed to the same handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.encoders.base import Batch
from pipeline.encoders.image_prep import PIXELS, CropPreprocessor, resize_crop_on_device
from pipeline.ingest.decode.image import decode_image
from pipeline.ingest.decode.jpeg_route import JpegBytes
from pipeline.precompute.handlers import Handler
from pipeline.precompute.loader import JpegBatch, StatusRow, status_row

log = logging.getLogger(__name__)

# the decoder seam: JPEGs -> (B, 3, crop_h, crop_w) uint8 crops; raises when any item cannot be decoded
JpegDecoder = Callable[[Sequence[JpegBytes]], torch.Tensor]


@dataclass(frozen=True)
class PillowJpeg:
    """The worker's CPU path, run here: Pillow (draft-decoded to ``min_side``) and the crop preprocessor."""

    crop: CropPreprocessor
    config: Any  # the ImageConfig (max_pixels, background)
    min_side: int = 0

    def __call__(self, items: Sequence[JpegBytes]) -> torch.Tensor:
        crops = [self.crop.one(decode_image(it.data, it.ext, self.config, self.min_side)) for it in items]
        return torch.from_numpy(np.stack(crops))


@dataclass(frozen=True)
class TorchvisionJpeg:
    """Batched nvJPEG decoding on ``device`` (needs a torchvision whose ``decode_jpeg`` takes a CUDA device)."""

    crop: CropPreprocessor
    device: torch.device

    def __call__(self, items: Sequence[JpegBytes]) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg

        crops = []
        for group in pixel_groups(items, DEVICE_PIXEL_BUDGET):  # full-size decodes are held per group only
            data = [torch.frombuffer(bytearray(it.data), dtype=torch.uint8) for it in group]
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
            # one resize per image: they have their own sizes until the crop
            crops.extend(resize_crop_on_device(im.unsqueeze(0), self.crop) for im in images)
        return torch.cat(crops)


DEVICE_PIXEL_BUDGET = 1 << 28  # pixels decoded at full size at once (768 MB of RGB), whatever the batch size


def pixel_groups(items: Sequence[JpegBytes], budget: int) -> list[list[JpegBytes]]:
    """``items`` in order, cut into groups whose header sizes sum to at most ``budget`` pixels (an image
    larger than the budget, which ``max_pixels`` may allow, is a group of its own)."""
    groups: list[list[JpegBytes]] = []
    used = budget
    for it in items:
        pixels = it.size[0] * it.size[1]
        if used + pixels > budget:
            groups.append([])
            used = 0
        groups[-1].append(it)
        used += pixels
    return groups


class DeviceJpegStep:
    """A :class:`JpegBatch` -> (keys decoded, ``{PIXELS: uint8 on device}`` or None, status rows of the rest)."""

    def __init__(self, decoder: JpegDecoder, fallback: PillowJpeg, device: torch.device):
        self.decoder, self.fallback, self.device = decoder, fallback, device

    def __call__(self, msg: JpegBatch, handler: Handler) -> tuple[tuple[str, ...], Batch | None, list[StatusRow]]:
        try:
            return msg.keys, {PIXELS: self.decoder(msg.jpegs).to(self.device)}, []
        except Exception as exc:  # one bad item must not cost the batch: retry item by item
            log.warning("batched JPEG decode of %d items failed (%s); retrying item by item", len(msg.keys), exc)
        keys, crops, bad = [], [], []
        for key, item in zip(msg.keys, msg.jpegs, strict=True):
            try:
                crops.append(self._one(item).to(self.device))
            except Exception as exc:
                bad.append(status_row(handler, key, msg.modality, exc))
                continue
            keys.append(key)
        return tuple(keys), ({PIXELS: torch.cat(crops)} if crops else None), bad

    def _one(self, item: JpegBytes) -> torch.Tensor:
        try:
            return self.decoder([item])
        except Exception as exc:
            log.debug("device JPEG decode failed (%s); decoding with Pillow", exc)
        return self.fallback([item])  # a DecodeError here is the item's status, as in the worker
