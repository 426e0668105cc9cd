"""The held-out split, by key: one definition shared by the trainer, evaluation and pairing.

A key's side is a hash of ``seed:key`` (so it keeps its side as data grows). The trainer holds
out ``val_fraction`` of the keys; the pair stage calibrates its acceptance threshold on the other
side only, so the held-out items never tune what round 2 trains on.
"""

from __future__ import annotations

import hashlib

import numpy as np


def is_val(keys: list[str] | np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """Held-out flag per key: a hash of ``seed:key`` below ``fraction``."""
    return key_fraction(keys, str(seed)) < fraction


def key_fraction(keys: list[str] | np.ndarray, salt: str) -> np.ndarray:
    """A uniform value in [0, 1) per key from a hash of ``salt:key``."""
    out = np.empty(len(keys), dtype=np.float64)
    for i, key in enumerate(keys):
        h = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(h, "little") / 2.0**64
    return out
