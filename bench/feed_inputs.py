"""Real inputs for ``bench.feed``: members of the shipped demo shards, the held-out bench data,
the real photos under ``tests/data/photos``, and larger files built here (sized like the
workloads of the GPU table: 640 px photos, 5 s 44.1 kHz FLAC, 320x240 clips of 48 frames,
16,384-point clouds).

A source is ``name -> [(key, ext, bytes)]``; :func:`sources` gives every source that exists
for a modality (the bench data only once ``just bench-data`` made it).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from bench import precompute_data as data

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
BENCH_DATA = ROOT / "bench-data"
PHOTOS = ROOT / "tests" / "data" / "photos"

Member = tuple[str, str, bytes]  # key, extension, bytes

BUILT: dict[str, Callable[[np.random.Generator], bytes]] = {
    "image": partial(data.photo_jpeg, side=640),
    "text": data.caption_txt,
    "audio": partial(data.tone_flac, seconds=5.0),
    "video": partial(data.pan_mp4, width=320, height=240, frames=48),
    "points": partial(data.shape_npy, points=16384),
}
BUILT_EXT = {"image": "jpg", "text": "txt", "audio": "flac", "video": "mp4", "points": "npy"}


def shard_members(folder: Path, modality: str, limit: int) -> list[Member]:
    """Up to ``limit`` members of ``modality`` from the tars in ``folder``, in shard order."""
    from pipeline.ingest.decode import find_member
    from pipeline.ingest.shards import ShardFault, iter_samples

    out: list[Member] = []
    for tar in sorted(folder.glob("*.tar")):
        for sample in iter_samples(str(tar)):
            if isinstance(sample, ShardFault):
                break
            found = find_member(sample, modality)
            if found is not None:
                out.append((str(sample["__key__"]), found[0], found[1]))
            if len(out) >= limit:
                return out
    return out


def photos(limit: int) -> list[Member]:
    return [(p.stem, "jpg", p.read_bytes()) for p in sorted(PHOTOS.glob("*.jpg"))[:limit]]


def built(modality: str, count: int) -> list[Member]:
    rng = np.random.default_rng(0)
    return [(f"built-{i:05d}", BUILT_EXT[modality], BUILT[modality](rng)) for i in range(count)]


def sources(modality: str, limit: int) -> dict[str, list[Member]]:
    """Every source of real inputs there is for ``modality``, each at most ``limit`` members."""
    out = {"demo": shard_members(DEMO, modality, limit)}
    if BENCH_DATA.is_dir():
        out["bench-data"] = shard_members(BENCH_DATA, modality, limit)
    if modality == "image":
        out["photos"] = photos(limit)
    out["built"] = built(modality, min(limit, 32 if modality in ("video", "audio") else 64))
    return {name: members for name, members in out.items() if members}
