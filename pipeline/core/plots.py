"""PNG figures written the way every output is: to a temporary file, then renamed into place.

matplotlib is imported on first use with the non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.store import atomic_write


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path) -> None:
    """Write ``fig`` to ``path`` atomically and close it."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        pyplot().close(fig)
