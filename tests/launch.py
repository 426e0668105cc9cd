"""Start several CPU processes the way users do: ``torchrun --nproc_per_node N``.

accelerate 1.15's ``accelerate launch --cpu --num_processes N`` starts ONE process on these
machines (DESIGN.md), so multi-process tests go through torchrun and assert the world size.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free local port, so test runs side by side never share a rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], nproc: int = 2, timeout: float = 180, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``torchrun --nproc_per_node nproc ARGS`` (args: a script path or ``-m module ...``)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(free_port()), *args]
    return subprocess.run(cmd, env=env, cwd=cwd or REPO, timeout=timeout, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
