"""File and key digests: one definition each."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, streamed (``hashlib.file_digest``)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def keys_digest(keys: Iterable[str]) -> str:
    """A digest of an ordered key list (which items, in which order)."""
    return hashlib.sha1("\n".join(keys).encode()).hexdigest()
