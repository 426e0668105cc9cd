"""Build bindery's demo dataset (``data/demo``) and the held-out benchmark (``bench-data``)
from real content in Debian packages (see :mod:`pipeline.demo.sources`).

    python -m pipeline.demo.build --out data/demo            # the shipped demo (4 shards, < 20 MB)
    python -m pipeline.demo.build --bench --out bench-data   # every source item not in the demo

Deterministic: inputs are read in sorted order, the demo takes the first items of each group
in sha1(key) order, tar members carry fixed times and owners, and the point sampling is
seeded by the key. The benchmark is disjoint from the demo (held out).

Sample groups (members besides ``json``, which holds label, source, license, attribution):

* ``stamp-sfx``: tuxpaint stamps with a sound effect -> ``jpg`` + ``txt`` + ``ogg``
* ``stamp-video``: stamps shown as a 2 s pan/zoom clip -> ``mp4`` + ``txt``
* ``stamp``: stamps as pictures only -> ``jpg`` + ``txt``
* ``speech``: asterisk prompts -> ``flac`` (the recording) + ``txt`` (its transcript)
* ``model``: inventor models -> ``npy`` (2048 points) + ``txt`` + ``flac`` (the caption, spoken)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.core.store import atomic_write
from pipeline.demo import sources as src

log = logging.getLogger(__name__)

SHARDS = 4  # demo shards: demo-000000.tar .. demo-000003.tar
BENCH_SAMPLES_PER_SHARD = 256
# samples per group in the demo (the rest of each group is the benchmark)
DEMO_COUNTS = {"stamp-sfx": 80, "stamp-video": 48, "stamp": 32, "speech": 48, "model": 34}
VIDEO_SHARE = 4  # one picture-only stamp in VIDEO_SHARE becomes a stamp-video sample
POINTS = 2048  # points per cloud
IMAGE_SIZE = 256  # longest side of the shipped JPEGs


def _order(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()


def gather() -> dict[str, list[src.Item]]:
    """Every usable source item by group, each group in sha1(key) order."""
    groups: dict[str, list[src.Item]] = {g: [] for g in DEMO_COUNTS}
    for item in src.stamps():
        group = item.group
        if group == "stamp" and int(_order(item.key), 16) % VIDEO_SHARE == 0:
            group = "stamp-video"
        groups[group].append(item)
    groups["speech"] = src.speech()
    groups["model"] = [m for m in src.models() if usable_vertices(m) is not None]
    return {g: sorted(items, key=lambda i: _order(i.key)) for g, items in groups.items()}


def usable_vertices(item: src.Item) -> np.ndarray | None:
    """A model's vertices, or None when it has too few (primitive-only or unreadable scenes)."""
    vertices = src.inventor_points(src.ivcat(item.path))
    if len(vertices) == 0 or len(np.unique(vertices, axis=0)) < src.MIN_MODEL_POINTS:
        return None
    return vertices


def members(item: src.Item, group: str) -> dict[str, bytes]:
    """The tar members of one sample."""
    license_, attribution = src.LICENSES[item.package]
    meta = {"label": item.label, "group": group, "source": f"debian:{item.package}:{item.path}",
            "license": license_, "attribution": attribution}
    out = {"txt": item.caption.encode()}
    if group in ("stamp-sfx", "stamp", "stamp-video"):
        image = src.stamp_rgb(item.path, IMAGE_SIZE)
        if group == "stamp-video":
            out["mp4"] = src.pan_zoom_mp4(image)
        else:
            out["jpg"] = src.jpeg_bytes(image)
        if "ogg" in item.extra:
            out["ogg"] = item.extra["ogg"].read_bytes()
    elif group == "speech":
        out["flac"] = src.wav_to_flac(item.path)
    elif group == "model":
        vertices = usable_vertices(item)
        assert vertices is not None, "gather() keeps usable models only"
        buf = io.BytesIO()
        np.save(buf, src.sample_points(vertices, POINTS, seed=int(_order(item.key)[:8], 16)))
        out["npy"] = buf.getvalue()
        out["flac"] = src.espeak_flac(item.caption)
        meta["attribution"] += "; audio: " + src.LICENSES["espeak-ng"][1]
    out["json"] = json.dumps(meta, sort_keys=True).encode()
    return out


def select(groups: dict[str, list[src.Item]], bench: bool) -> list[tuple[str, src.Item]]:
    """Demo: the first DEMO_COUNTS[g] items of each group; bench: all the others."""
    chosen = []
    for group, items in groups.items():
        cut = DEMO_COUNTS[group]
        picked = items[cut:] if bench else items[:cut]
        chosen += [(group, it) for it in picked]
    return chosen


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    """A WebDataset tar with reproducible headers (mtime 0, root owner), written via a temp name."""

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for key, files in samples:
                for ext in sorted(files):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(files[ext]), 0, 0o644
                    info.uname = info.gname = "root"
                    tar.addfile(info, io.BytesIO(files[ext]))

    atomic_write(path, write)


def notice(counts: Counter, packages: set[str], rebuild: str) -> str:
    lines = ["bindery demo data: every sample is built from real content in Debian packages.", "",
             "Samples per group: " + ", ".join(f"{g} {n}" for g, n in sorted(counts.items())), ""]
    for pkg in sorted(packages):
        license_, attribution = src.LICENSES[pkg]
        lines += [f"{pkg}: {attribution.rstrip('.')}. License: {license_}.",
                  f"  Full terms: /usr/share/doc/{pkg}/copyright on a Debian system.", ""]
    lines += ["Images were resized and composited on white; clips are pan/zoom renders of stamp images;",
              "speech is converted WAV -> FLAC; 3D models are sampled to 2048 vertices (.npy, unit sphere)",
              f"and their captions spoken by espeak-ng. Rebuild: {rebuild}", ""]
    return "\n".join(lines)


def build(out: Path, bench: bool = False) -> dict[str, int]:
    """Build the demo (or the benchmark) into ``out``; returns the samples per group."""
    missing = src.missing_packages()
    if missing:
        raise SystemExit(f"demo_data: missing Debian packages; run:\n  apt-get install -y {' '.join(missing)}")
    chosen = select(gather(), bench)
    samples, counts = [], Counter()
    for group, item in tqdm(chosen, desc="samples", disable=not sys.stderr.isatty()):
        samples.append((item.key, members(item, group)))
        counts[group] += 1
    samples.sort(key=lambda s: _order(s[0]))  # mix the groups across shards
    n_shards = SHARDS if not bench else max(1, -(-len(samples) // BENCH_SAMPLES_PER_SHARD))
    prefix = "bench" if bench else "demo"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(f"{prefix}-*.tar"):
        old.unlink()
    for s in range(n_shards):
        write_tar(out / f"{prefix}-{s:06d}.tar", samples[s::n_shards])
    rebuild = f"python -m pipeline.demo.build {'--bench ' if bench else ''}--out {out}"
    (out / "NOTICE").write_text(notice(counts, {it.package for _, it in chosen} | {"espeak-ng"}, rebuild))
    log.info("wrote %d samples in %d shards to %s: %s", len(samples), n_shards, out, dict(counts))
    return dict(counts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo.build", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder for the shards and NOTICE")
    parser.add_argument("--bench", action="store_true", help="build the held-out benchmark instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    counts = build(args.out, bench=args.bench)
    log.info("samples per group: %s", json.dumps(counts))


if __name__ == "__main__":
    main()
