"""The exported heads file: ``runs/<run>/heads.safetensors`` + ``runs/<run>/config.json``.

This is the only channel from the trainer to the pipeline (pairing in a trained space):
the trainer writes it, anything reads it, and neither imports the other.

``heads.safetensors`` holds, per projected modality ``m``, the state dict of a plain
``nn.Sequential(Linear, ReLU, Linear[, ReLU, Linear ...])`` under keys
``<m>.<index>.weight`` / ``<m>.<index>.bias`` (Linear layers at even indices, no dropout),
which is EBind's projector layout for the 1024->2048->1024 default. The head's output is
L2-normalised. ``config.json`` has a ``heads`` entry per modality:
``{"layers": [[in, out], ...], "activation": "relu", "normalize": true, "space": <anchor>}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.core.layout import HEADS_FILE, RunLayout
from pipeline.core.layout import RUN_CONFIG_FILE as CONFIG_FILE
from pipeline.core.store import atomic_write, atomic_write_text

__all__ = ["HEADS_FILE", "CONFIG_FILE", "linears", "plain_head", "head_spec", "save_heads", "load_heads", "project"]


def _run_layout(run_dir: str | Path | RunLayout) -> RunLayout:
    return run_dir if isinstance(run_dir, RunLayout) else RunLayout(Path(run_dir))


def plain_head(layers: list[list[int]] | list[tuple[int, int]]) -> nn.Sequential:
    """Linear -> ReLU -> ... -> Linear for ``layers = [[in, hidden], ..., [hidden, out]]``."""
    mods: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(layers):
        if i:
            mods.append(nn.ReLU())
        mods.append(nn.Linear(int(d_in), int(d_out)))
    return nn.Sequential(*mods)


def linears(head: nn.Sequential) -> list[nn.Linear]:
    """The head's Linear layers in order (ReLU and Dropout left out)."""
    return [m for m in head if isinstance(m, nn.Linear)]


def head_spec(head: nn.Sequential, space: str) -> dict[str, Any]:
    return {"layers": [[m.in_features, m.out_features] for m in linears(head)], "activation": "relu",
            "normalize": True, "space": space}


def save_heads(run_dir: str | Path | RunLayout, heads: dict[str, nn.Sequential], config: dict[str, Any], space: str) -> None:
    """Write heads (plain Sequentials, see :func:`plain_head`) and the run config.

    Each file is written to a temporary name and renamed into place, ``config.json`` last, so a
    reader never sees half a file (a reader between the two renames sees new heads, old config).
    """
    run = _run_layout(run_dir)
    tensors = {f"{m}.{k}": v.detach().cpu().float().contiguous() for m, h in heads.items()
               for k, v in h.state_dict().items()}
    atomic_write(run.heads, lambda tmp: save_file(
        tensors, str(tmp), metadata={"format": "bindery-heads-v1", "space": space}))
    config = {**config, "anchor": space, "heads": {m: head_spec(h, space) for m, h in heads.items()}}
    atomic_write_text(run.config, json.dumps(config, indent=2, default=str))


def load_heads(run_dir: str | Path | RunLayout) -> tuple[dict[str, nn.Sequential], dict[str, Any]]:
    """Rebuild every exported head as a plain ``nn.Sequential`` (eval mode); return it with the config."""
    run = _run_layout(run_dir)
    if not run.heads.is_file():
        raise FileNotFoundError(f"{run.heads}: no exported heads; run `bindery train` first")
    config = json.loads(run.config.read_text())
    tensors = load_file(str(run.heads))
    heads = {}
    for m, spec in config["heads"].items():
        head = plain_head(spec["layers"])
        head.load_state_dict({k[len(m) + 1:]: v for k, v in tensors.items() if k.startswith(f"{m}.")})
        heads[m] = head.eval().requires_grad_(False)
    return heads, config


@torch.no_grad()
def project(head: nn.Sequential, vectors: torch.Tensor) -> torch.Tensor:
    """Apply an exported head and L2-normalise, as the trainer did."""
    out = head(vectors.float())
    return torch.nn.functional.normalize(out, dim=-1)
