"""The hostile suite's shared inputs: bomb shards built once per session, and the worker runs over them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hostile import bombs

GOOD = ("good-0", "good-1", "good-2")


@dataclass(frozen=True)
class Bomb:
    """A shard with one hostile sample (key ``bomb``) between good ones, and what must come of it."""

    name: str
    file: str  # the shard's file name
    build: object  # (prefix) -> the shard's bytes; every key starts with prefix/
    modality: str  # the modality the hostile member is read as
    status: str  # its status row ("ok": it must be embedded)
    message: str = ""  # a regex the status row's message must match


    def key(self, name: str = "bomb") -> str:
        return f"{self.name}/{name}"


def _in_shard(ext: str, make):
    """A shard builder whose hostile member is ``bomb.<ext>`` holding ``make()``."""
    return lambda prefix: bombs.shard(prefix, bombs.member(f"{prefix}/bomb.{ext}", make()))


GiB = bombs.GiB
BOMBS = [
    Bomb("npz-2gib-of-zeros", "npz.tar", _in_shard("npz", lambda: bombs.npz_of_zeros(2 * GiB // 12)),
         "points", "error", r"^points: 178956970 points exceed max_points=10000000$"),
    Bomb("npz-header-lies", "npzlie.tar", _in_shard("npz", lambda: bombs.npz_of_zeros(2 * GiB // 12, declared=100)),
         "points", "corrupt", r"^points: the array holds more data than its header's shape \(100, 3\)$"),
    Bomb("gnu-sparse-2gib", "sparse.tar", lambda p: bombs.shard(p, bombs.sparse_member(f"{p}/bomb.npy", 2 * GiB)),
         "points", "error", r"^points: member '[\w-]+/bomb.npy' is 2147483648 bytes once its sparse holes are "
                            r"filled, over the member limit of 536870912 bytes \(precompute.max_member_mb\)"),
    Bomb("targz-2gib-member", "big.tar.gz", lambda p: bombs.targz_with_zero_member(p, f"{p}/bomb.npy", 2 * GiB),
         "points", "error", r"^points: member '[\w-]+/bomb.npy' is 2147483648 bytes, over the member limit"),
    Bomb("wav-at-1-hz", "wav1hz.tar", _in_shard("wav", lambda: bombs.wav_at(1, 3500)), "audio", "ok"),
    Bomb("flac-8ch-48k-30min", "flac.tar", _in_shard("flac", lambda: bombs.flac_silence(1800)), "audio", "ok"),
    Bomb("flac-streamed-30min", "flac0.tar", _in_shard("flac", lambda: bombs.flac_silence(1800, declared=0)),
         "audio", "ok"),
    Bomb("flac-streamed-2h", "flac2h.tar", _in_shard("flac", lambda: bombs.flac_silence(7200, 8000, 1, declared=0)),
         "audio", "error", r"^audio: longer than max_seconds=3600.0 \(3600.\d s counted before decoding\)$"),
    Bomb("jpeg-claims-7999x7999", "jpeg.tar", _in_shard("jpg", lambda: bombs.jpeg_claiming(7999, 7999)),
         "image", "corrupt", r"^image: JPEG data ends before its declared 7999x7999: \d+ bytes, .* at least 124968$"),
]


@pytest.fixture(scope="session")
def bomb_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bombs")
    for bomb in BOMBS:
        bombs.write(folder / bomb.file, bomb.build(bomb.name))
    return folder
