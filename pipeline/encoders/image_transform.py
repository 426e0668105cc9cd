"""The eval-time image transform of CLIP-style models, in PIL and numpy (no torchvision).

open_clip's and Perception Encoder's preprocessing are torchvision ``Compose`` objects, and
torchvision cannot be imported on the CPU machines here. On PIL images torchvision's
``Resize`` is PIL's own ``Image.resize`` with the target size computed as below, and
``CenterCrop`` / ``ToTensor`` / ``Normalize`` are slicing and arithmetic, so this module
reproduces them exactly:

* ``shortest`` -- the shorter side to ``size`` (the longer ``int(size * long / short)``, as
  torchvision computes it), then a centre crop ``size x size`` whose top-left corner is
  ``round((h - size) / 2), round((w - size) / 2)``;
* ``squash`` -- resize to ``size x size`` ignoring the aspect ratio;
* then RGB, ``[0, 1]`` floats, ``(x - mean) / std`` per channel, as a ``(3, size, size)`` tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

RESIZE_MODES = ("shortest", "squash")
INTERPOLATIONS = ("bicubic", "bilinear")


def shortest_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after torchvision's ``Resize(size)`` (an int: the shorter side becomes ``size``)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


@dataclass(frozen=True)
class ImageTransform:
    """Picklable (it runs in DataLoader workers): PIL image -> normalised (3, size, size) float tensor."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize mode {self.resize_mode!r} is not supported; use one of {RESIZE_MODES}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is not supported; use one of {INTERPOLATIONS}")

    def resized(self, image):
        """The PIL image after resizing and cropping (still PIL)."""
        from PIL import Image

        resample = Image.BICUBIC if self.interpolation == "bicubic" else Image.BILINEAR
        if self.resize_mode == "squash":
            return image.resize((self.size, self.size), resample)
        w, h = shortest_side_size(*image.size, self.size)
        image = image.resize((w, h), resample)
        top, left = int(round((h - self.size) / 2.0)), int(round((w - self.size) / 2.0))
        return image.crop((left, top, left + self.size, top + self.size))

    def __call__(self, image) -> torch.Tensor:
        pixels = np.asarray(self.resized(image).convert("RGB"), dtype=np.float32) / 255.0
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1)))

    def batch(self, images: list) -> torch.Tensor:
        return torch.stack([self(img) for img in images]) if images else torch.zeros(0, 3, self.size, self.size)

    def info(self) -> dict:
        return {"image_size": self.size, "resize_mode": self.resize_mode, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std)}
