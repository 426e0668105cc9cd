"""Run a hostile case in a subprocess whose address space is capped, and measure its peak memory.

The cap (:data:`LIMIT_BYTES`, set with ``RLIMIT_AS``) is what a DataLoader worker gets on a
small node: a decoder that allocates what a header claims fails in the child (a MemoryError,
which must become a status row) instead of taking gigabytes from the machine. The peak
resident set (``ru_maxrss`` from ``wait4``, the child and its own reaped children, such as
DataLoader workers) is what the tests assert against :data:`PEAK_RSS_MB`.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

LIMIT_BYTES = 3 << 29  # 1.5 GiB of address space (of which ~0.9 GiB are torch's and the libraries' mappings)
PEAK_RSS_MB = 768  # the bound the suite states for a worker's peak resident memory (measured: under 300 MB)
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    rc: int
    rows: list[dict] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    stderr: str = ""

    def shard(self, name: str) -> list[dict]:
        return [r for r in self.rows if r.get("shard") == name]


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))


def run_worker(*args: str, timeout: float = 120) -> Result:
    """``python -m tests.hostile.worker ARGS`` under the cap; its JSON lines and its peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.hostile.worker", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limit, text=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()))
    reader.start()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # reaped here, with its resource usage
    killer.cancel()
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return Result(proc.returncode, rows, usage.ru_maxrss / 1024, "".join(err))
