"""The real pairs condensation learns from, per class, and the synthetic sets' starting points.

A *pair* is one sample key present in every condensed modality, with a class (``label_key`` of
its metadata json). Its vectors are taken in the condensation space (:mod:`trainer.condense.space`)
and the pairs are split by the trainer's held-out rule (:func:`trainer.data.rows.is_val` with
``train.seed`` / ``train.val_fraction``): condensation sees only the training side, so the report
can test on the held-out side as ``bindery eval`` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.core.manifest import Manifest, ManifestError
from pipeline.core.samples import sample_labels
from pipeline.core.store import read_store, stored_modalities
from trainer.condense.space import Space
from trainer.data.rows import is_val, key_index

log = logging.getLogger(__name__)
JITTER = 0.01  # noise that separates repeated real items when a class has fewer items than per_class


@dataclass
class LabelledPairs:
    """Samples present in every condensed modality, with their class; ``vectors[m][i]`` is item ``i``."""

    keys: np.ndarray  # (n,) sample keys
    label: np.ndarray  # (n,) index into ``classes``
    classes: list[str]
    vectors: dict[str, np.ndarray]  # modality -> (n, d_m) float32, unit norm, in the condensation space

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def modalities(self) -> list[str]:
        return list(self.vectors)

    def take(self, sel: np.ndarray) -> LabelledPairs:
        return LabelledPairs(self.keys[sel], self.label[sel], self.classes, {m: v[sel] for m, v in self.vectors.items()})

    def counts(self) -> np.ndarray:
        return np.bincount(self.label, minlength=len(self.classes))

    def class_rows(self) -> list[np.ndarray]:
        """Row indices of each class, in class order."""
        order = np.argsort(self.label, kind="stable")
        return np.split(order, np.cumsum(self.counts())[:-1])

    def fused(self) -> np.ndarray:
        """``[a; b; ...]`` per item, in modality order: what the report's probe reads."""
        return np.concatenate([self.vectors[m] for m in self.vectors], axis=1)


def load_pairs(manifest: Manifest, space: Space) -> LabelledPairs:
    """Every labelled sample that has all of ``condense.modalities``, in the condensation space."""
    c = manifest.condense
    labels = sample_labels(manifest.layout, c.label_key)
    if not labels:
        raise ManifestError(f"condense.label_key: no sample json under {manifest.layout.metadata} carries "
                            f"{c.label_key!r}; set condense.label_key to the metadata field with the class")
    stores = {m: read_store(manifest.output, m) for m in c.modalities}
    keys = np.array(sorted(set(labels).intersection(*[set(s.keys) for s in stores.values()])), dtype=object)
    if not len(keys):
        raise ManifestError(f"condense.modalities: no labelled sample has all of {list(c.modalities)}; "
                            "condense modalities that co-occur in the same samples")
    classes = sorted({labels[k] for k in keys})
    cls = {name: i for i, name in enumerate(classes)}
    vectors = {m: space.map(m, s.vectors[key_index(s.keys, keys)]) for m, s in stores.items()}
    return LabelledPairs(keys, np.array([cls[labels[k]] for k in keys], np.int64), classes, vectors)


def split(pairs: LabelledPairs, seed: int, fraction: float) -> tuple[LabelledPairs, LabelledPairs]:
    """(training side, held-out side) by the trainer's rule on the sample key."""
    val = is_val(pairs.keys, seed, fraction)
    return pairs.take(np.flatnonzero(~val)), pairs.take(np.flatnonzero(val))


def keep_classes(pairs: LabelledPairs, names: list[str]) -> LabelledPairs:
    """The items of the classes ``names`` only, re-indexed in that order."""
    new = {name: i for i, name in enumerate(names)}
    remap = np.array([new.get(name, -1) for name in pairs.classes], np.int64)
    label = remap[pairs.label]
    out = pairs.take(np.flatnonzero(label >= 0))
    return LabelledPairs(out.keys, label[label >= 0], list(names), out.vectors)


def condensable(train: LabelledPairs, min_items: int) -> list[str]:
    """Classes with at least ``min_items`` training pairs; raises when none has."""
    counts = train.counts()
    names = [name for name, n in zip(train.classes, counts, strict=True) if n >= min_items]
    dropped = [f"{name} ({n})" for name, n in zip(train.classes, counts, strict=True) if n < min_items]
    if dropped:
        log.info("condense: %d class(es) with fewer than %d training pairs left out: %s", len(dropped), min_items,
                 ", ".join(dropped))
    if not names:
        raise ManifestError(f"condense.min_items: no class has {min_items} training pairs (most: {counts.max()}); "
                            "lower condense.min_items")
    return names


class ClassSampler:
    """Per step, up to ``batch_size`` random training pairs of each class (all of a smaller class)."""

    def __init__(self, train: LabelledPairs, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        self.rows = train.class_rows()
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.vectors = {m: torch.from_numpy(np.ascontiguousarray(v)) for m, v in train.vectors.items()}
        self.device = torch.device(device)

    def draw(self, classes: list[int] | np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Real vectors of a batch for ``classes`` and each row's position in ``classes``."""
        picks = [self.rng.choice(self.rows[c], min(self.batch_size, len(self.rows[c])), replace=False)
                 for c in classes]
        idx = torch.from_numpy(np.concatenate(picks))
        group = torch.from_numpy(np.repeat(np.arange(len(picks)), [len(p) for p in picks]))
        real = {m: v[idx].to(self.device, torch.float32) for m, v in self.vectors.items()}
        return real, group.to(self.device)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def initial_sets(train: LabelledPairs, per_class: int, init: str, seed: int) -> dict[str, np.ndarray]:
    """Starting synthetic vectors, ``(classes, per_class, d_m)`` per modality, unit norm.

    ``real``: random real pairs of the class, the same items in every modality (a class with fewer
    items takes each once, then repeats them with a little noise so the copies can move apart);
    ``noise``: random directions.
    """
    rng = np.random.default_rng(seed)
    if init == "noise":
        return {m: unit(rng.standard_normal((len(train.classes), per_class, v.shape[1])).astype(np.float32))
                for m, v in train.vectors.items()}
    picks, repeated = [], np.zeros((len(train.classes), per_class), bool)
    for c, rows in enumerate(train.class_rows()):
        first = rng.choice(rows, min(per_class, len(rows)), replace=False)
        more = rng.choice(rows, per_class - len(first), replace=True)
        picks.append(np.concatenate([first, more]))
        repeated[c, len(first):] = True
    idx = np.stack(picks)
    out = {}
    for m, v in train.vectors.items():
        start = v[idx].astype(np.float32)
        jitter = JITTER * rng.standard_normal(start.shape).astype(np.float32) / np.sqrt(start.shape[-1])
        out[m] = unit(np.where(repeated[..., None], start + jitter, start)).astype(np.float32)
    return out


def check_stores(manifest: Manifest) -> None:
    """Every condensed modality has a store (before anything is loaded)."""
    stored = stored_modalities(manifest.output)
    missing = [m for m in manifest.condense.modalities if m not in stored]
    if missing:
        raise ManifestError(f"condense.modalities: no embedding store for {missing} under {manifest.output} "
                            f"(stored: {stored or 'none'}); run `bindery precompute` or condense stored modalities")


def training_pairs(manifest: Manifest, space: Space) -> LabelledPairs:
    """The training side of the labelled pairs, in the classes that have ``min_items`` of them."""
    pairs = load_pairs(manifest, space)
    train, _held_out = split(pairs, manifest.train.seed, manifest.train.val_fraction)
    return keep_classes(train, condensable(train, manifest.condense.min_items))
