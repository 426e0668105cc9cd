"""One run per output folder: an exclusive lock on ``layout.lock`` held for the whole run.

``fcntl.flock`` is released by the kernel when the holder exits, SIGKILL included, so a crashed
run never leaves a stale lock; the file keeps the holder's pid, host and start time so that a
refused run can say who holds it. Only rank 0 of a run takes the lock (the other ranks of the
same run are no competitors) and tells the others whether it got it.

A Slurm array task holds the output's lock *shared* and its slice's lock exclusively: the tasks of
an array run side by side, a second run of one slice is refused, and so is a plain run (which
wants the output's lock exclusively) while any task runs, and every task while a plain run does.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path


class OutputBusy(Exception):
    """Another run holds the output's lock; the message names it."""


class OutputLock:
    def __init__(self, path: Path, shared: bool = False, holder: str = ""):
        self.path, self.file, self.shared, self.holder = path, None, shared, holder

    def acquire(self) -> OutputLock:
        f = open(self.path, "a+")  # noqa: SIM115 - held open while the lock is held
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "a process that has not written its pid yet"
            f.close()
            raise OutputBusy(f"{self.path.parent} is being written by another `bindery precompute` ({holder}); "
                             "wait for it to finish, or give this run another dataset.output") from None
        f.seek(0)
        f.truncate()
        f.write(f"{self.holder}pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self.file = f
        return self

    def release(self) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None
