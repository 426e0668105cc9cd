"""Peak memory of a decoding worker on each hostile bomb (tests/hostile), one fresh process per bomb.

    PYTHONPATH=$PWD python bench/hostile.py

Each bomb shard (a few MB that claim gigabytes) is read and decoded by
``tests.hostile.worker decode`` under a 1.5 GiB address-space cap; the table gives the file's
size, what its headers claim, and the worker's peak RSS (ru_maxrss), next to a baseline shard
holding only the good samples (the libraries' own footprint: numpy, Pillow, PyAV, torch).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.hostile import bombs, harness
from tests.hostile.conftest import BOMBS


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = bombs.write(folder / "baseline.tar", bombs.shard("baseline", b""))
        rows = [("baseline (good samples only)", base)]
        rows += [(b.name, bombs.write(folder / b.file, b.build(b.name))) for b in BOMBS]
        print(f"{'bomb':30s} {'file MB':>8s} {'rc':>3s} {'peak RSS MB':>12s}")
        for name, path in rows:
            r = harness.run_worker("decode", "image,text,audio,points", "512", str(path))
            print(f"{name:30s} {path.stat().st_size / 1e6:8.2f} {r.rc:3d} {r.peak_rss_mb:12.0f}")
        print(f"address-space cap {harness.LIMIT_BYTES / 2**30:.1f} GiB; the suite's bound {harness.PEAK_RSS_MB} MB")


if __name__ == "__main__":
    main()
