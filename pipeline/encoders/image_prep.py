"""CLIP-style image preprocessing split between the worker (resize once, crop, uint8) and the device.

transformers' CLIP-style processors (shortest-edge resize, centre crop, rescale, normalise)
spend most of their CPU on conversions: PIL -> NumPy -> PIL -> float64 -> float32, per image.
:class:`CropPreprocessor` does the one step that needs Pillow in the worker -- a single resize of
the (draft-decoded) image with the processor's own filter, of only the region the centre crop
keeps -- and hands over ``uint8`` pixels (a quarter of the float bytes to copy);
:class:`Normalize` rescales and normalises them on the device. The pixels are within 3 levels
(mean under 0.1) of the processor's PIL path, which resizes the whole image and then crops: the
box maps the crop back at the exact scale, where transformers truncates the resized size to an
integer (the tests compare them).

:func:`split_processor` accepts a processor only when it does exactly those steps (no padding,
no longest edge); anything else stays with transformers in the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.encoders.base import Batch
from pipeline.encoders.image_transform import shortest_side_size as resize_size

PIXELS = "pixels_uint8"  # the worker's batch entry: (B, 3, H, W) uint8


@dataclass(frozen=True)
class CropPreprocessor:
    """Picklable worker side: PIL images -> {PIXELS: (B, 3, crop_h, crop_w) uint8}."""

    shortest: int  # the short side after the resize
    crop: tuple[int, int]  # (height, width) of the centre crop
    resample: int  # the PIL filter the processor resizes with

    def one(self, image: Any) -> np.ndarray:
        from PIL import Image

        image = image.convert("RGB")
        width, height = resize_size(*image.size, self.shortest)
        h, w = self.crop
        top, left = (height - h) // 2, (width - w) // 2
        if top >= 0 and left >= 0:
            # only the crop is resampled: Pillow's box maps it back onto the source (same filter
            # support), a third less work for a 3:2 photo; pixels within 3 levels of resize-then-crop
            sx, sy = image.size[0] / width, image.size[1] / height
            box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
            arr = np.asarray(image.resize((w, h), Image.Resampling(self.resample), box=box))
            return np.ascontiguousarray(arr.transpose(2, 0, 1))
        if (width, height) != image.size:
            image = image.resize((width, height), Image.Resampling(self.resample))
        arr = np.asarray(image)
        # smaller than the crop: zero-padded, centred, as transformers pads
        out = np.zeros((max(h, arr.shape[0]), max(w, arr.shape[1]), 3), np.uint8)
        pt, pl = (out.shape[0] - arr.shape[0] + 1) // 2, (out.shape[1] - arr.shape[1] + 1) // 2
        out[pt:pt + arr.shape[0], pl:pl + arr.shape[1]] = arr
        top, left = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
        return np.ascontiguousarray(out[top:top + h, left:left + w].transpose(2, 0, 1))

    def __call__(self, images: list[Any]) -> Batch:
        return {PIXELS: torch.from_numpy(np.stack([self.one(im) for im in images]))}


@dataclass(frozen=True)
class Normalize:
    """Device side: {PIXELS} -> {"pixel_values": (B, 3, H, W) float32}, ``(x * rescale - mean) / std``."""

    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    key: str = "pixel_values"

    def __call__(self, batch: Batch) -> Batch:
        x = batch[PIXELS].to(torch.float32) * self.rescale
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        rest = {k: v for k, v in batch.items() if k != PIXELS}
        return {**rest, self.key: (x - mean) / std}


def _size_of(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


def split_processor(proc: Any) -> tuple[CropPreprocessor, Normalize] | None:
    """(worker step, device step) for a CLIP-style transformers image processor, or None."""
    size, crop = getattr(proc, "size", None), getattr(proc, "crop_size", None)
    shortest = _size_of(size, "shortest_edge") if size is not None else None
    wanted = (getattr(proc, "do_resize", False), getattr(proc, "do_center_crop", False),
              getattr(proc, "do_rescale", False), getattr(proc, "do_normalize", False))
    if not all(wanted) or not shortest or _size_of(size, "longest_edge") or getattr(proc, "do_pad", False):
        return None
    if crop is None or not _size_of(crop, "height") or not _size_of(crop, "width"):
        return None
    mean, std = getattr(proc, "image_mean", None), getattr(proc, "image_std", None)
    if mean is None or std is None or len(mean) != 3 or len(std) != 3:
        return None
    try:
        resample = int(getattr(proc, "resample", None) or 2)  # PIL BILINEAR, transformers' default
    except (TypeError, ValueError):  # not a PIL filter: leave the processor whole
        return None
    return (CropPreprocessor(int(shortest), (int(_size_of(crop, "height")), int(_size_of(crop, "width"))), resample),
            Normalize(float(proc.rescale_factor), tuple(map(float, mean)), tuple(map(float, std))))


FRAMES = "frames_uint8"  # a worker batch of video frames at their own size: (B * T, 3, H, W) uint8
TORCH_FILTERS = {2: "bilinear", 3: "bicubic"}  # Pillow's BILINEAR and BICUBIC, antialiased in torch as in Pillow


def resize_crop_on_device(frames: torch.Tensor, crop: CropPreprocessor) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, crop_h, crop_w) uint8: the worker's resize and centre crop, on the
    device (the same filter with antialiasing, torch's counterpart of Pillow's; within a few levels of it)."""
    n, _, h, w = frames.shape
    new_w, new_h = resize_size(w, h, crop.shortest)
    x = frames.to(torch.float32)
    if (new_w, new_h) != (w, h):
        x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode=TORCH_FILTERS[crop.resample], antialias=True,
                                            align_corners=False)
    ch, cw = crop.crop
    top, left = max((new_h - ch) // 2, 0), max((new_w - cw) // 2, 0)
    x = x[:, :, top:top + ch, left:left + cw]
    if x.shape[2:] != (ch, cw):  # smaller than the crop: centred zero padding
        pad_h, pad_w = ch - x.shape[2], cw - x.shape[3]
        x = torch.nn.functional.pad(x, ((pad_w + 1) // 2, pad_w // 2, (pad_h + 1) // 2, pad_h // 2))
    return x.round().clamp(0, 255).to(torch.uint8)
