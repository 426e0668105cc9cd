"""The trainer's stage-entry checks: every ManifestError `bindery train` and `bindery eval` raise.

Each names the key and the fix, and runs before any work (:func:`check_rows` right after the row
join, the first moment the row count is known). The modules below the stage entries (data, model,
losses, eval) take their config section and the output layout and assume these checks passed.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow.parquet as pq

from pipeline.core.layout import HEADS_FILE, OutputLayout, RunLayout
from pipeline.core.manifest import EvalConfig, ManifestError, TrainConfig
from pipeline.core.store import read_metadata, stored_modalities
from trainer.data import emm1
from trainer.data.rows import TRIPLE_COLUMNS, CachedData
from trainer.data.stream import store_dim


def check_train(train: TrainConfig, layout: OutputLayout) -> None:
    """``[train]`` against the output folder: the anchor and projected modalities are stored, the
    head width fits the anchor, the triples table and the quintuples' query modality fit."""
    stored = stored_modalities(layout.root)
    if train.anchor not in stored:
        raise ManifestError(f"train.anchor: no embedding store for {train.anchor!r} under {layout.root}; "
                            "run `bindery precompute` or set train.anchor to a stored modality")
    for m in train.modalities:
        if m not in stored:
            raise ManifestError(f"train.modalities: {m!r} has no embedding store under {layout.root}; "
                                f"run `bindery precompute` for it or drop it from train.modalities")
        if m == train.anchor or m in train.anchor_passthrough:
            raise ManifestError(f"train.modalities: {m!r} is the anchor or a passthrough modality; remove it")
    anchor_dim = store_dim(layout, train.anchor)
    if train.out_dim and train.out_dim != anchor_dim:
        raise ManifestError(f"train.out_dim: {train.out_dim} differs from the anchor's dim {anchor_dim}; "
                            "heads map into the anchor space, so leave it 0")
    check_init(train, layout)
    if train.triples:
        check_triples(train.triples)
    if train.use_quintuples and layout.pairs.quintuples.is_file():
        check_quintuples_query(layout, train.anchor)


def check_init(train: TrainConfig, layout: OutputLayout) -> None:
    """``train.init`` fits the head's depth; ``train.refit`` has early stopping to take its epochs from;
    ``train.warm_start`` (which replaces ``train.init`` when set) names another run with exported heads."""
    if train.init == "ridge" and train.depth > 2:
        raise ManifestError(f"train.init: \"ridge\" starts a head as a linear map, which needs train.depth 1 or 2 "
                            f"(got {train.depth}); set train.init = \"random\" or train.depth = 2")
    if train.bridge and (train.init != "random" or train.warm_start or train.refit):
        raise ManifestError("train.bridge: a bridge run trains its own rows from a random start, without early "
                            "stopping; leave train.init = \"random\", train.warm_start = \"\" and train.refit = false")
    if train.refit and not train.early_stop_fraction:
        raise ManifestError("train.refit: refitting trains for the epochs early stopping kept, and train.early_stop_fraction "
                            "is 0; set it (e.g. 0.1) or set train.refit = false")
    if not train.warm_start:
        return
    if train.warm_start == train.run:
        raise ManifestError(f"train.warm_start: {train.warm_start!r} is this run itself; name the run to start "
                            "from (e.g. round 1's) or set it to \"\"")
    source = layout.run(train.warm_start)
    if not source.heads.is_file():
        raise ManifestError(f"train.warm_start: run {train.warm_start!r} has no exported heads ({source.heads}); "
                            f"train it first or name a trained run ({trained_runs(layout) or 'none yet'})")


def trained_runs(layout: OutputLayout) -> list[str]:
    """The runs under ``<output>/runs/`` that have exported heads (for the messages naming a run)."""
    return sorted(p.parent.name for p in layout.runs_root.glob(f"*/{HEADS_FILE}"))


def check_triples(path: str) -> None:
    if emm1.is_triplets(path):
        emm1.check_columns(path)
        return
    try:
        names = pq.read_schema(path).names
    except FileNotFoundError:
        raise ManifestError(f"train.triples: {path} not found; give a Parquet file, an E-MM1 triplets.csv, "
                            "or set it to \"\"") from None
    missing = set(TRIPLE_COLUMNS) - set(names)
    if missing:
        raise ManifestError(f"train.triples: {path} lacks column(s) {sorted(missing)}; "
                            f"it needs {', '.join(TRIPLE_COLUMNS)}")


def check_quintuples_query(layout: OutputLayout, anchor: str) -> None:
    """The quintuples' queries must be anchor items: ``bindery.query`` (written by `bindery pair`, the
    query modality) must equal ``train.anchor``; tables without it are taken as anchor-keyed."""
    path = layout.pairs.quintuples
    query = read_metadata(path).get("query")
    if query is not None and query != anchor:
        raise ManifestError(f"pair.query / train.anchor: {path} pairs {query!r} queries but train.anchor is "
                            f"{anchor!r}; set train.anchor = {query!r}, or re-run `bindery pair` with "
                            f"pair.query = {anchor!r}, or set train.use_quintuples = false")


def check_rows(train: TrainConfig, data: CachedData) -> None:
    """The row join left something to train on."""
    if not len(data.rows):
        raise ManifestError("train: no training rows; enable train.use_captions or run `bindery pair` "
                            "to write pairs/quintuples.parquet")
    if not len(data.train_idx):
        raise ManifestError(f"train.val_fraction: {train.val_fraction} holds out all {len(data.rows)} rows, "
                            "leaving none to train on; lower it (e.g. 0.1)")


def check_eval_run(evaluation: EvalConfig, train: TrainConfig, layout: OutputLayout) -> RunLayout:
    """The run ``[eval] run`` names (default ``[train] run``) has exported heads; returns its layout."""
    run = layout.run(evaluation.run or train.run)
    if not run.heads.is_file():
        key = "eval.run" if evaluation.run else "eval.run (empty, so train.run)"
        raise ManifestError(f"{key}: run {run.root.name!r} has no exported heads ({run.heads}); "
                            f"train it with `bindery train` or set eval.run to a trained run "
                            f"({trained_runs(layout) or 'none yet'})")
    return run


def run_config(run: RunLayout) -> dict[str, Any]:
    """The exported run's ``config.json``."""
    return json.loads(run.config.read_text())


def check_passthrough(train: TrainConfig, layout: OutputLayout) -> None:
    """Passthrough modalities are evaluated as they are, so they must have the anchor's dim."""
    stored = stored_modalities(layout.root)
    anchor_dim = store_dim(layout, train.anchor)
    for m in train.anchor_passthrough:
        if m in stored and (dim := store_dim(layout, m)) != anchor_dim:
            raise ManifestError(f"train.anchor_passthrough: {m!r} is {dim}-d but the anchor {train.anchor!r} is "
                                f"{anchor_dim}-d; give {m!r} a head (list it in train.modalities) instead")
