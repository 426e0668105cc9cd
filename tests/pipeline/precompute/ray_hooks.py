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
