"""Test hooks run inside Ray actors (``pipeline.precompute.engines.ray.PART_HOOK``), mid-part.

Each is called after a part's first encoded batch with (shard id, modality, attempt); it fails
only where the test asks, and only on the attempt it names, so the retry can succeed.
"""

from __future__ import annotations

import os

RAISE_ON = ("shard-000000", "text")  # raises on its first attempt
KILL_ON = ("shard-000001", "image")  # its actor dies on its first attempt


def raise_once_and_kill_once(shard: str, modality: str, attempt: int) -> None:
    if attempt == 0 and (shard, modality) == RAISE_ON:
        raise RuntimeError(f"test hook: {shard}/{modality} fails on attempt 0")
    if attempt == 0 and (shard, modality) == KILL_ON:
        os._exit(17)  # the actor process dies mid-part, as under a SIGKILL or an OOM kill


def always_raise(shard: str, modality: str, attempt: int) -> None:
    if (shard, modality) == RAISE_ON:
        raise RuntimeError(f"test hook: {shard}/{modality} fails on attempt {attempt}")


def summary_features(items) -> dict:
    """A batch of any decoded items (captions, images) as 4 numbers each."""
    import numpy as np
    import torch

    rows = []
    for item in items:
        a = np.frombuffer(item.encode(), np.uint8) if isinstance(item, str) else np.asarray(item, np.float32)
        a = a.astype(np.float32).ravel()
        rows.append([a.size, a.mean(), a.std(), 1.0])
    return {"x": torch.tensor(rows, dtype=torch.float32)}


class TinyEncoder:
    """A plain-torch plugin encoder: no transformers import, so an actor holding it starts fast."""

    name, dim, sample_rate = "ray-hooks-tiny", 4, None

    def __init__(self, modality: str):
        self.modality = modality

    def preprocessor(self):
        return summary_features

    def encode(self, batch):
        return batch["x"] + 1e-3

    def modules(self):
        return []

    def to(self, device):
        return self

    def digest(self):
        return "sha256:none"

    def provenance(self):
        return {}


def tiny(modality, config):
    return TinyEncoder(modality)
