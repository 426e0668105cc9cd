"""EBind's released heads layout (``encord-team/ebind-full``), both ways.

ebind's ``EBindModel.state_dict()`` drops the backbones and keeps its projectors, each an
``MLPProjector`` whose ``net`` is ``Linear -> ReLU -> Linear`` (1024 -> 2048 -> 1024, then
``unit``): keys ``projectors.<modality>.net.<index>.weight|bias`` for ``audio`` and
``points``, 8,394,752 parameters in all. bindery's heads file
(:mod:`pipeline.core.heads_file`) holds the same Sequential under ``<modality>.<index>.*``, so
the two layouts differ only in the key prefix; a head is Linear layers at even indices with
ReLU between them, its output L2-normalised in both.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.core.heads_file import plain_head
from pipeline.core.store import atomic_write

FORMAT = "ebind-full"
_KEY = re.compile(r"^projectors\.(?P<m>[^.]+)\.net\.(?P<i>\d+)\.(?P<p>weight|bias)$")


class HeadsLayoutError(ValueError):
    """A heads file that is not in EBind's projector layout (the message names the file and key)."""


def to_ebind_state(heads: dict[str, nn.Sequential]) -> dict[str, torch.Tensor]:
    """bindery heads -> EBind's state-dict keys."""
    return {f"projectors.{m}.net.{k}": v.detach().cpu().float().contiguous()
            for m, head in heads.items() for k, v in head.state_dict().items()}


def heads_from_ebind_state(state: dict[str, torch.Tensor], source: str = "state") -> dict[str, nn.Sequential]:
    """EBind's projector state -> plain bindery heads (eval mode); other keys are a HeadsLayoutError."""
    layers: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for key, value in state.items():
        match = _KEY.match(key)
        if not match:
            raise HeadsLayoutError(f"{source}: key {key!r} is not an EBind projector key "
                                   "(projectors.<modality>.net.<index>.weight|bias)")
        layers.setdefault(match["m"], {}).setdefault(int(match["i"]), {})[match["p"]] = value
    if not layers:
        raise HeadsLayoutError(f"{source}: no projectors.* keys; not an EBind heads file")
    heads = {}
    for m, by_index in sorted(layers.items()):
        indices = sorted(by_index)
        if indices != list(range(0, 2 * len(indices), 2)) or any(len(p) != 2 for p in by_index.values()):
            raise HeadsLayoutError(f"{source}: projectors.{m}.net has Linear layers at {indices}; expected "
                                   "weight and bias at 0, 2, 4, ... (Linear, ReLU, Linear; no dropout)")
        shapes = [[int(by_index[i]["weight"].shape[1]), int(by_index[i]["weight"].shape[0])] for i in indices]
        head = plain_head(shapes)
        head.load_state_dict({f"{i}.{p}": t.float() for i, params in by_index.items() for p, t in params.items()})
        heads[m] = head.eval().requires_grad_(False)
    return heads


def read_ebind_heads(path: str | Path) -> dict[str, nn.Sequential]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such heads file")
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise HeadsLayoutError(f"{path}: not a safetensors file ({exc})") from None
    return heads_from_ebind_state(state, str(path))


def write_ebind_heads(path: str | Path, heads: dict[str, nn.Sequential]) -> Path:
    """Write ``heads`` in EBind's layout (atomically); ebind's ``EBindModel.load_state_dict`` reads it."""
    tensors = to_ebind_state(heads)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT}))
    return Path(path)
