"""`just bench`: every benchmark in one run, printed as a table and saved as JSON.

Each section is a module under ``bench/`` with ``measure(small: bool, device: str) -> dict``
(nested dicts of figures). This runner only times nothing itself: it calls them in one
process, prints ``section / figure / value``, and writes ``bench/results/<device>.json``
with the command line, the device and the library versions, so a figure in the README can
always be traced to the run that made it.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

SECTIONS = ("feed", "precompute", "knn", "train", "publish", "quality")
DEFAULT_SECTIONS = ("feed", "precompute", "knn", "train", "publish")  # quality needs bench-data/ (just bench-data)
log = logging.getLogger("bench")


def device_name(device: str) -> str:
    """A file-name-safe name of the device the figures come from."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = f"cpu-{os.cpu_count()}core-{platform.machine()}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def cpu_model() -> str:
    """The host CPU's model name (``/proc/cpuinfo``; else ``platform.processor()``): CPU figures vary
    from one machine to the next, so each report names the one it came from."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        rows = []
        for k, v in value.items():
            rows += flatten(f"{prefix}.{k}" if prefix else str(k), v)
        return rows
    return [(prefix, value)]


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU-sized configs that finish in minutes")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--only", default=",".join(DEFAULT_SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--cores", type=int, default=16, help="feed: cores of the GPU host the projection is for")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    sections = [s for s in args.only.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {sorted(unknown)}; use {', '.join(SECTIONS)}")
    results: dict[str, Any] = {}
    load_before = [round(x, 2) for x in os.getloadavg()]
    for section in sections:
        log.info("running bench.%s (small=%s, device=%s)", section, args.small, device)
        start = time.perf_counter()
        fn = importlib.import_module(f"bench.{section}").measure
        extra = {"cores": args.cores} if "cores" in inspect.signature(fn).parameters else {}
        results[section] = fn(small=args.small, device=device, **extra)
        results[section]["wall_s"] = round(time.perf_counter() - start, 1)

    name = device_name(device)
    report = {
        "device": name, "small": args.small, "command": " ".join(["python -m bench.run", *(argv or sys.argv[1:])]),
        "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_model(),
        "loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}{'-small' if args.small else ''}.json"
    path.write_text(json.dumps(report, indent=2, default=str))

    rows = flatten("", results)
    width = max(len(k) for k, _ in rows)
    sys.stdout.write(f"device: {name} ({report['cpu']})   small: {args.small}   "
                     f"1-min load {load_before[0]} -> {report['loadavg_after'][0]}\n")
    for key, value in rows:
        sys.stdout.write(f"{key:<{width}}  {fmt(value)}\n")
    sys.stdout.write(f"written: {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
