"""A few samples of the demo shards, covering every modality: the input of a quick smoke run.

``python -m pipeline.demo.subset --per-modality 1 --out out/ebind-smoke/data/smoke-000000.tar`` picks,
in shard order, samples until each modality (by member extension) has ``per-modality`` of them,
and writes them, members unchanged, as one WebDataset tar. ``just ebind-smoke`` runs
EBind's five backbones over it with random weights.
"""

from __future__ import annotations

import argparse
import glob
import io
import logging
import tarfile
from collections import Counter
from pathlib import Path

log = logging.getLogger(__name__)

EXTENSIONS = {"image": ("jpg", "jpeg", "png", "webp"), "text": ("txt",), "video": ("mp4", "webm", "mkv"),
              "audio": ("flac", "wav", "mp3", "ogg", "m4a"), "points": ("npy", "npz", "ply")}


def _samples(pattern: str) -> list[tuple[str, dict[str, bytes]]]:
    out: dict[str, dict[str, bytes]] = {}
    for path in sorted(glob.glob(pattern)):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.isfile():
                    key, _, ext = member.name.partition(".")
                    out.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return list(out.items())


def modalities_of(members: dict[str, bytes]) -> set[str]:
    return {m for m, exts in EXTENSIONS.items() if any(e in members for e in exts)}


def pick(samples: list[tuple[str, dict[str, bytes]]], per_modality: int) -> list[tuple[str, dict[str, bytes]]]:
    """Samples in order, each taken only when it adds a modality still short of ``per_modality``."""
    have: Counter = Counter()
    chosen = []
    for key, members in samples:
        mods = modalities_of(members)
        if any(have[m] < per_modality for m in mods if m != "text"):
            chosen.append((key, members))
            have.update(mods)
        if all(have[m] >= per_modality for m in EXTENSIONS):
            break
    return chosen


def write(samples: list[tuple[str, dict[str, bytes]]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        for key, members in samples:
            for ext, data in sorted(members.items()):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", default="data/demo/demo-*.tar")
    parser.add_argument("--per-modality", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    chosen = pick(_samples(args.shards), args.per_modality)
    write(chosen, Path(args.out))
    counts = Counter(m for _, members in chosen for m in modalities_of(members))
    print(f"{args.out}: {len(chosen)} samples, {dict(sorted(counts.items()))}")


if __name__ == "__main__":
    main()
