"""``[modalities.image] decode``: which path decodes the JPEGs of an image modality, chosen once at start.

``device`` (:mod:`pipeline.ingest.decode.jpeg_route` in the workers, :mod:`.jpeg_device` here) needs
all of: the encoder on a CUDA device, ``torchvision.io.decode_jpeg`` importable, and an encoder whose
worker preprocessing is the CLIP-style resize-and-crop (:class:`~pipeline.encoders.image_prep.CropPreprocessor`
with a filter torch has), the one step the device can redo with the same geometry before the encoder's
own ``prepare`` normalises. ``auto`` takes it when all hold and otherwise keeps the CPU path, unchanged;
``device`` without them is a ManifestError naming the key.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.core.manifest import ManifestError
from pipeline.encoders.image_prep import TORCH_FILTERS, CropPreprocessor

KEY = "modalities.image.decode"


def _why_not(device: torch.device, encoder: Any) -> str | None:
    """Why the device path cannot run here, or None when it can."""
    if device.type != "cuda":
        return f"the image encoder runs on {device.type!r}, not a CUDA GPU (torch sees CUDA: {torch.cuda.is_available()})"
    preprocessor = encoder.preprocessor()
    if not isinstance(preprocessor, CropPreprocessor) or preprocessor.resample not in TORCH_FILTERS:
        return (f"the encoder's preprocessing ({type(preprocessor).__name__}) is not the resize-crop-normalise "
                "split the device reproduces")
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        return (f"torchvision.io.decode_jpeg does not import ({type(exc).__name__}: {exc}); install the "
                f"torchvision built for torch {torch.__version__}")
    return None


def choose_decode(setting: str, device: torch.device, encoder: Any) -> str:
    """``"device"`` or ``"cpu"`` for ``setting`` (auto | cpu | device) and the image ``encoder`` on ``device``."""
    if setting == "cpu":
        return "cpu"
    why = _why_not(device, encoder)
    if why is None:
        return "device"
    if setting == "device":
        raise ManifestError(f"{KEY}: \"device\" but {why}; use decode = \"auto\" (the GPU path where it can run, "
                            "else Pillow in the workers) or \"cpu\", or run on a GPU host with torchvision")
    return "cpu"
