"""The analysed space: every needed modality's items in one space, grouped into listings and fused.

A run's bound space is its anchor space after the exported heads (read with
:mod:`pipeline.core.heads_file`, never the trainer's code): a projected modality goes through its
head (L2-normalised, as the trainer did), the anchor and the run's passthrough modalities are
L2-normalised. With no run the stores are used as they are, and they must already be one space.

A listing is the set of samples that share the metadata field ``group_key`` (each sample alone when
it is empty). Its fused vector is the weighted mean, over the fused modalities, of the mean of its
items of that modality (Hamara & Rivas: the mean of a post's image embeddings averaged with its
text embedding, 0.5 each), L2-normalised only when ``normalize`` says so.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from pipeline.core.heads_file import load_heads, project
from pipeline.core.manifest import AnalyzeConfig, Manifest, ManifestError
from pipeline.core.samples import iter_sample_metadata, sample_labels
from pipeline.core.store import read_store, stored_modalities

log = logging.getLogger(__name__)
CHUNK = 65536


@dataclass
class Items:
    """One modality in the analysed space: ``keys[i]`` (a sample key) owns ``vectors[i]``."""

    modality: str
    keys: np.ndarray  # (n,) object array of str
    vectors: np.ndarray  # (n, dim) float32
    how: str  # how the vectors reached the space, for the report


@dataclass
class Listings:
    """The fused listings, sorted by key."""

    keys: np.ndarray  # (n,) listing keys: the group_key value, or the sample key
    vectors: np.ndarray  # (n, dim) float32 fused vectors
    counts: dict[str, np.ndarray]  # modality -> items of that modality per listing
    labels: np.ndarray  # (n,) object: the majority label of the listing's samples, "" when none
    caption_keys: np.ndarray  # (n,) object: the sample whose caption stands for the listing
    lacking: dict[str, int]  # modality -> listings that had none of it (dropped when missing = "drop")


@dataclass(frozen=True)
class Grouping:
    """sample key -> listing key, and sample key -> label."""

    listing_of: dict[str, str]  # only samples whose metadata carries group_key
    label_of: dict[str, str]

    def listing(self, sample_key: str) -> str:
        return self.listing_of.get(sample_key, sample_key)


def fuse_weights(cfg: AnalyzeConfig) -> dict[str, float]:
    """``analyze.fuse`` as modality -> weight (checked by the manifest)."""
    return {mod: float(w) for mod, _, w in (t.partition(":") for t in cfg.fuse)}


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _store(manifest: Manifest, modality: str, key: str):
    if modality not in stored_modalities(manifest.output):
        raise ManifestError(f"{key}: no embedding store for {modality!r} under "
                            f"{manifest.layout.embeddings(modality)}; run `bindery precompute` or remove it")
    return read_store(manifest.output, modality)


def _through_head(head: torch.nn.Sequential, vectors: np.ndarray) -> np.ndarray:
    out = [project(head, torch.from_numpy(np.array(vectors[i:i + CHUNK], dtype=np.float32))).numpy()
           for i in range(0, len(vectors), CHUNK)]
    return np.concatenate(out) if out else np.zeros((0, head[-1].out_features), np.float32)


def _run_space(manifest: Manifest, wanted: dict[str, str]) -> dict[str, Items]:
    run = manifest.analyze.run
    try:
        heads, config = load_heads(manifest.layout.run(run).root)
    except FileNotFoundError:
        raise ManifestError(f"analyze.run: run {run!r} has no exported heads ({manifest.layout.run(run).heads}); "
                            "train it with `bindery train` or set analyze.run = \"\" for stores already in one "
                            "space") from None
    anchor = config.get("anchor", config.get("space"))
    passthrough = set(config.get("manifest", {}).get("train", {}).get("anchor_passthrough", []))
    out = {}
    for mod, key in wanted.items():
        if mod not in heads and mod != anchor and mod not in passthrough:
            raise ManifestError(f"{key}: {mod!r} is not in run {run!r}'s space (heads: {', '.join(heads) or 'none'}; "
                                f"anchor: {anchor}); remove it or use a run that maps it")
        store = _store(manifest, mod, key)
        if mod in heads:
            if heads[mod][0].in_features != store.dim:
                raise ManifestError(f"analyze.run: the {mod} head of run {run!r} takes dim "
                                    f"{heads[mod][0].in_features} but the {mod} store has dim {store.dim}")
            vectors, how = _through_head(heads[mod], store.vectors), f"through the {mod} head of run {run}, L2-normalised"
        else:
            vectors, how = unit(np.asarray(store.vectors, np.float32)), f"the anchor space of run {run}, L2-normalised"
        out[mod] = Items(mod, store.keys, vectors, how)
    return out


def _same_space(a, b) -> bool:
    """Two unprojected stores are one space when both name the same ``space``, else the same encoder."""
    if a.metadata.get("space") is not None and b.metadata.get("space") is not None:
        return a.metadata["space"] == b.metadata["space"]
    return a.metadata.get("encoder") is not None and a.metadata.get("encoder") == b.metadata.get("encoder")


def _store_space(manifest: Manifest, wanted: dict[str, str]) -> dict[str, Items]:
    stores = {mod: _store(manifest, mod, key) for mod, key in wanted.items()}
    first = next(iter(stores.values()))
    for mod, store in stores.items():
        if store.dim != first.dim or not _same_space(store, first):
            raise ManifestError(f"analyze.run: with no run the stores must be one space, but {mod} "
                                f"({store.metadata.get('encoder')}, dim {store.dim}) and {first.modality} "
                                f"({first.metadata.get('encoder')}, dim {first.dim}) are not; set analyze.run to "
                                "a trained run whose heads bind them")
    return {mod: Items(mod, s.keys, np.asarray(s.vectors, np.float32), "as stored") for mod, s in stores.items()}


def load_space(manifest: Manifest) -> dict[str, Items]:
    """The fused and the query modalities' items in the analysed space."""
    cfg = manifest.analyze
    wanted = {mod: "analyze.fuse" for mod in fuse_weights(cfg)}
    wanted.update({mod: "analyze.query" for mod in cfg.query if mod not in wanted})
    items = _run_space(manifest, wanted) if cfg.run else _store_space(manifest, wanted)
    for it in items.values():
        log.info("%s: %d items, %s", it.modality, len(it.keys), it.how)
    return items


def read_grouping(manifest: Manifest) -> Grouping:
    cfg, listing_of, layout = manifest.analyze, {}, manifest.layout
    if cfg.group_key:
        for key, meta in iter_sample_metadata(layout):
            if meta.get(cfg.group_key) not in (None, ""):
                listing_of[key] = str(meta[cfg.group_key])
    labels = sample_labels(layout, cfg.label_key) if cfg.label_key else {}
    return Grouping(listing_of, labels)


def _modality_means(items: Items, index: dict[str, int], grouping: Grouping) -> tuple[np.ndarray, np.ndarray]:
    """Per-listing mean of one modality's items (zero rows where a listing has none) and the counts."""
    rows = np.fromiter((index[grouping.listing(k)] for k in items.keys), np.int64, len(items.keys))
    n = len(index)
    member = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, np.arange(len(rows)))), shape=(n, len(rows)))
    counts = np.bincount(rows, minlength=n)
    sums = np.asarray(member @ items.vectors, dtype=np.float32)
    return sums / np.maximum(counts, 1)[:, None].astype(np.float32), counts


def _majority(labels: list[str]) -> str:
    """The most common label; ties go to the first name in sorted order."""
    if not labels:
        return ""
    counts = Counter(labels)
    top = max(counts.values())
    return min(name for name, c in counts.items() if c == top)


def fuse(items: dict[str, Items], weights: dict[str, float], grouping: Grouping, missing: str,
         normalize: bool) -> Listings:
    """Group every fused modality's items into listings and fuse them (see the module docstring)."""
    keys = np.array(sorted({grouping.listing(k) for m in weights for k in items[m].keys}), dtype=object)
    index = {k: i for i, k in enumerate(keys)}
    means, counts = {}, {}
    for m in weights:
        means[m], counts[m] = _modality_means(items[m], index, grouping)
    present = {m: (counts[m] > 0).astype(np.float32) for m in weights}
    keep = np.ones(len(keys), bool)
    if missing == "drop":
        for m in weights:
            keep &= counts[m] > 0
    total = sum(weights[m] * present[m] for m in weights)
    keep &= total > 0
    fused = sum(weights[m] * present[m][:, None] * means[m] for m in weights) / np.maximum(total, 1e-12)[:, None]
    fused = np.asarray(fused[keep], np.float32)
    members: dict[int, list[str]] = {}
    for m in weights:
        for k in items[m].keys:
            members.setdefault(index[grouping.listing(k)], []).append(k)
    kept = np.flatnonzero(keep)
    labels = [_majority([grouping.label_of[k] for k in members[i] if k in grouping.label_of]) for i in kept]
    text_keys = set(items["text"].keys) if "text" in items else set()
    captions = [min((k for k in members[i] if k in text_keys), default=min(members[i])) for i in kept]
    return Listings(keys[keep], unit(fused) if normalize else fused, {m: c[keep] for m, c in counts.items()},
                    np.array(labels, dtype=object), np.array(captions, dtype=object),
                    {m: int((c == 0).sum()) for m, c in counts.items()})
