"""Weightless encoders for every modality: a few statistics of the decoded item, plus a constant.

They make a full `bindery precompute` run cheap enough to repeat for every hostile case, and
never give a zero vector (the constant feature), so a status row in these tests always comes
from the input, never from the encoder. Registered by name (``hostile-stats``) on import.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipeline.encoders.base import Encoder
from pipeline.encoders.registry import register

DIMS = {"image": 49, "text": 27, "audio": 9, "points": 7, "video": 4}


def _image(img) -> np.ndarray:
    return np.asarray(img.resize((4, 4)), np.float32).reshape(-1) / 255.0


def _text(text: str) -> np.ndarray:
    out = np.zeros(26, np.float32)
    for ch in text.lower():
        if "a" <= ch <= "z":
            out[ord(ch) - 97] += 1
    return out


def _audio(wav: np.ndarray) -> np.ndarray:
    return np.array([np.sqrt(np.mean(np.square(p))) for p in np.array_split(wav, 8)], np.float32)


def _points(pts: np.ndarray) -> np.ndarray:
    return np.concatenate([pts[:, :3].mean(axis=0), pts[:, :3].std(axis=0)]).astype(np.float32)


def _video(clip: np.ndarray) -> np.ndarray:
    return clip.reshape(-1, 3).mean(axis=0).astype(np.float32) / 255.0


FEATURES = {"image": _image, "text": _text, "audio": _audio, "points": _points, "video": _video}


class Features:
    """The picklable preprocessor: items -> {"x": (B, dim)} with a trailing constant 1."""

    def __init__(self, modality: str):
        self.modality = modality

    def __call__(self, items: list[Any]) -> dict[str, torch.Tensor]:
        rows = [np.append(FEATURES[self.modality](it), np.float32(1.0)) for it in items]
        return {"x": torch.from_numpy(np.stack(rows).astype(np.float32))}


class StatsEncoder(Encoder):
    name = "hostile-stats"

    def __init__(self, modality: str):
        self.modality, self.dim = modality, DIMS[modality]
        self.sample_rate = 16_000 if modality == "audio" else None

    def preprocessor(self):
        return Features(self.modality)

    def encode(self, batch):
        return batch["x"]

    def modules(self):
        return []


def build(modality: str, config: Any) -> StatsEncoder:
    return StatsEncoder(modality)


register("hostile-stats", build)
