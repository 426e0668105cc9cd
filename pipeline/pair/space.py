"""Bring the query store and every target store into one retrieval space.

Two stores share a space when neither needs a head, their dims agree and their metadata say
so: the same ``space`` key when both stores carry one, else the same ``encoder`` (CLIP's text
and image towers are one ``hf:`` spec); equal dims alone prove nothing. Otherwise a trained run's exported
heads (``OutputLayout.run(pair.head_run).heads``, read with
:mod:`pipeline.core.heads_file`, never through the trainer) map a store into the run's anchor
space. Anything else is a configuration error raised before any search starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import ManifestError, PairConfig
from pipeline.core.store import read_store, stored_modalities

log = logging.getLogger(__name__)


@dataclass
class Pool:
    """One modality in the retrieval space: ``keys[i]`` owns the unit vector ``vectors[i]``."""

    modality: str
    keys: np.ndarray
    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    space: str  # the space's name: a modality (the store's own) or a run's anchor
    projected: bool = False  # mapped by a head of pair.head_run
    metadata: dict = field(default_factory=dict)  # the store's ``bindery.*`` metadata (first part)


@dataclass
class PairInputs:
    query: Pool
    targets: dict[str, Pool] = field(default_factory=dict)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def pair_modalities(cfg: PairConfig, layout: OutputLayout) -> tuple[str, list[str]]:
    """The query modality and the target modalities, checked against the stores on disk."""
    stored = stored_modalities(layout.root)
    if cfg.query not in stored:
        raise ManifestError(f"pair.query: no embedding store for {cfg.query!r} under {layout.embeddings_root} "
                            f"(stored: {', '.join(stored) or 'none'}); run `bindery precompute` or pick a stored one")
    targets = list(cfg.targets) or [m for m in stored if m != cfg.query]
    for m in targets:
        if m == cfg.query:
            raise ManifestError(f"pair.targets: {m!r} is the query modality; remove it from pair.targets")
        if m not in stored:
            raise ManifestError(f"pair.targets: no embedding store for {m!r} under {layout.embeddings_root} "
                                f"(stored: {', '.join(stored)}); precompute it or remove it from pair.targets")
    if not targets:
        raise ManifestError(f"pair.targets: nothing to pair {cfg.query!r} with; precompute another modality")
    return cfg.query, targets


def _load_heads(run: str, layout: OutputLayout):
    if not run:
        return {}, None
    run_dir = layout.run(run)
    from pipeline.core.heads_file import load_heads

    try:
        heads, config = load_heads(run_dir)
    except FileNotFoundError:
        raise ManifestError(f"pair.head_run: no exported heads at {run_dir.root}; train that run first "
                            f"(`bindery train` with train.run={run!r}) or set pair.head_run=\"\"") from None
    return heads, config.get("anchor", config.get("space"))


def _to_pool(layout: OutputLayout, modality: str, heads: dict, anchor: str | None, head_run: str) -> Pool:
    store = read_store(layout.root, modality)
    if modality not in heads:
        space = str(store.metadata.get("space", modality))
        return Pool(modality, store.keys, unit_rows(store.vectors), space, metadata=store.metadata)
    import torch

    from pipeline.core.heads_file import project

    head = heads[modality]
    d_in = head[0].in_features
    if d_in != store.dim:
        raise ManifestError(f"pair.head_run: the {modality} head of run {head_run!r} takes dim {d_in} "
                            f"but the {modality} store has dim {store.dim}; use a run trained on these stores")
    out = [project(head, torch.from_numpy(np.array(store.vectors[s:s + 65536], dtype=np.float32))).numpy()
           for s in range(0, len(store), 65536)]
    vectors = np.concatenate(out) if out else np.zeros((0, head[-1].out_features), np.float32)
    log.info("projected %d %s vectors through run %r into the %s space", len(store), modality, head_run, anchor)
    return Pool(modality, store.keys, unit_rows(vectors), str(anchor), projected=True, metadata=store.metadata)


def _check_shared(query: Pool, target: Pool, head_run: str) -> None:
    """Raise unless ``target`` can be compared with ``query`` by inner product."""
    dq, dt = query.vectors.shape[1], target.vectors.shape[1]
    m = target.modality
    fix = (f"set pair.head_run to a run whose exported heads map {m} into the {query.modality} space "
           f"(train one with `bindery train`), or remove {m} from pair.targets")
    if query.projected or target.projected:
        if query.space != target.space or dq != dt:
            key = "pair.head_run" if head_run else "pair.targets"
            raise ManifestError(f"{key}: {m} ({target.space} space, dim {dt}) and the query {query.modality} "
                                f"({query.space} space, dim {dq}) are not in one space; {fix}")
        return
    if dq != dt:
        key = "pair.head_run" if head_run else "pair.targets"
        raise ManifestError(f"{key}: the {m} store (dim {dt}) is not in the {query.modality} store's space "
                            f"(dim {dq}); {fix}")
    why = _why_not_one_space(query, target)
    if why:
        key = "pair.head_run" if head_run else "pair.targets"
        raise ManifestError(f"{key}: the {m} store ({why[1]}) and the query {query.modality} store ({why[0]}) "
                            f"have the same dim {dq} but are not one space (equal dims prove nothing); {fix}")


def _why_not_one_space(query: Pool, target: Pool) -> tuple[str, str] | None:
    """None when two unprojected stores' metadata say they share a space, else what each says.

    Both name a ``space``: those must agree. Otherwise the ``encoder`` names must (precompute
    writes no ``space`` key; CLIP's towers, video through the image tower, share one spec).
    """
    sq, st = query.metadata.get("space"), target.metadata.get("space")
    if sq is not None and st is not None:
        return None if sq == st else (f"space {sq!r}", f"space {st!r}")
    eq, et = query.metadata.get("encoder"), target.metadata.get("encoder")
    if eq is not None and eq == et:
        return None
    return f"encoder {eq!r}", f"encoder {et!r}"


def load_inputs(cfg: PairConfig, layout: OutputLayout) -> PairInputs:
    """Load, project (when a head run is given) and L2-normalise the query and target stores.

    Part of the pair stage's entry: every mismatch raises a :class:`ManifestError` naming the
    ``[pair]`` key to change, before any search starts.
    """
    query_m, targets = pair_modalities(cfg, layout)
    heads, anchor = _load_heads(cfg.head_run, layout)
    query = _to_pool(layout, query_m, heads, anchor, cfg.head_run)
    if heads and not query.projected:
        query.space = str(anchor) if query_m == anchor else query.space
    inputs = PairInputs(query)
    for m in targets:
        pool = _to_pool(layout, m, heads, anchor, cfg.head_run)
        if heads and not pool.projected and m == anchor:
            pool.space = str(anchor)
        _check_shared(query, pool, cfg.head_run)
        inputs.targets[m] = pool
    return inputs
