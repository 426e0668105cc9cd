"""Export trained heads as ``runs/<run>/heads.safetensors`` + ``config.json`` (``pipeline.core.heads_file``).

The exported heads are plain ``nn.Sequential(Linear, ReLU, Linear...)`` without dropout:
for the 1024->2048->1024 default that is EBind's projector layout, loadable without bindery.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.core.ebind_heads import write_ebind_heads
from pipeline.core.heads_file import save_heads
from pipeline.core.layout import RunLayout
from trainer.model.heads import Binder, to_plain

log = logging.getLogger(__name__)


def export(run_dir: str | Path, binder: Binder, config: dict[str, Any]) -> Path:
    """Write the heads of ``binder`` and ``config`` (the run's manifest and data summary) to ``run_dir``."""
    heads = {m: to_plain(binder.heads[m]).cpu() for m in binder.modalities}
    config = {**config, "logit_scale": float(binder.scale().detach())}
    save_heads(run_dir, heads, config, space=binder.anchor)
    if config.get("manifest", {}).get("train", {}).get("export_ebind"):
        write_ebind_heads(RunLayout(Path(run_dir)).ebind_heads, heads)  # EBind's released layout too
    log.info("exported %d head(s) (%s) into %s", len(heads), ", ".join(heads), run_dir)
    return Path(run_dir)
