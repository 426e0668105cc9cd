"""The evaluated space: every modality of a run, in the anchor space, with its held-out split.

Everything is computed from the exported heads (``pipeline.core.heads_file``), so evaluation
measures exactly what a user of ``heads.safetensors`` gets. The split is the trainer's
(:func:`trainer.data.rows.is_val` with the run's seed and ``val_fraction``), applied to each
store by its own keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.heads_file import load_heads, project
from pipeline.core.layout import OutputLayout, RunLayout
from pipeline.core.manifest import TrainConfig
from pipeline.core.split import is_val
from pipeline.core.store import read_store, stored_modalities

CHUNK = 65536


def to_anchor_space(vectors: np.ndarray, head: torch.nn.Sequential | None) -> torch.Tensor:
    """Project (in chunks) through ``head`` or just L2-normalise when the modality is in the anchor space."""
    out = []
    for i in range(0, len(vectors), CHUNK):
        x = torch.from_numpy(np.array(vectors[i:i + CHUNK], dtype=np.float32))
        out.append(project(head, x) if head is not None else F.normalize(x, dim=-1))
    return torch.cat(out) if out else torch.zeros(0, 0)


@dataclass
class Space:
    """Every evaluated modality's keys and anchor-space vectors, with the split flags."""

    anchor: str
    mods: list[str]  # the anchor, the passthroughs and the headed modalities that have a store
    heads: dict[str, torch.nn.Sequential]
    config: dict  # the run's config.json
    keys: dict[str, np.ndarray]
    vecs: dict[str, torch.Tensor]
    val: dict[str, np.ndarray]  # held-out flag per item
    dropped: dict[str, np.ndarray] = field(default_factory=dict)  # held-out items left out of every score

    @classmethod
    def load(cls, layout: OutputLayout, run: RunLayout, train: TrainConfig) -> Space:
        """The run's heads applied to every store; ``train`` is the run's ``[train]`` section (its split)."""
        heads, config = load_heads(run.root)
        anchor = config["anchor"]
        stored = stored_modalities(layout.root)
        mods = [m for m in [anchor, *train.anchor_passthrough, *heads] if m in stored]
        space = cls(anchor, mods, heads, config, {}, {}, {})
        for m in mods:
            store = read_store(layout.root, m)
            space.keys[m], space.vecs[m] = store.keys, to_anchor_space(store.vectors, heads.get(m))
            space.val[m] = is_val(store.keys, train.seed, train.val_fraction)
        return space

    def side(self, m: str, split: str, held_out: bool = True) -> np.ndarray:
        """Indices of ``m``'s items on the held-out side (or the training side) of the split."""
        if split == "all":
            return np.arange(len(self.keys[m]))
        if not held_out:
            return np.flatnonzero(~self.val[m])
        return np.flatnonzero(self.val[m] & ~self.dropped.get(m, np.zeros(len(self.val[m]), bool)))

    def drop(self, m: str, idx: np.ndarray) -> None:
        """Leave ``m``'s held-out items ``idx`` out of the held-out side (duplicates of training items)."""
        mask = self.dropped.setdefault(m, np.zeros(len(self.val[m]), bool))
        mask[idx] = True


def pair_items(space: Space, q: str, t: str, split: str) -> tuple[torch.Tensor, np.ndarray, torch.Tensor] | None:
    """Queries (rows of ``q``'s store that have a same-key ``t`` item in the split), the gallery
    (rows of ``t``'s store in the split) and each query's truth (its position in the gallery);
    None when no query has a partner."""
    qi, ti = space.side(q, split), space.side(t, split)
    pos = {k: j for j, k in enumerate(space.keys[t][ti])}
    pairs = [(i, pos[k]) for i, k in zip(qi, space.keys[q][qi], strict=True) if k in pos]
    if not pairs:
        return None
    qsel, truth = (torch.as_tensor(np.array(v, dtype=np.int64)) for v in zip(*pairs, strict=True))
    return qsel, ti, truth
