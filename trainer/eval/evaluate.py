"""`bindery eval`: Recall@K, zero-shot, EShot and baselines of an exported run -> its ``metrics.json``.

The stage entry: it checks ``[eval]`` against the output folder, recovers the run's own ``[train]``
section (its split and passthroughs) from the exported ``config.json``, loads the run's
:class:`~trainer.eval.space.Space` and writes what :mod:`~trainer.eval.retrieval`,
:mod:`~trainer.eval.zero_shot` and :mod:`~trainer.eval.baselines` measure.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipeline.core.manifest import Manifest, ManifestError, TrainConfig, from_dict
from pipeline.core.samples import member_hashes, sample_labels
from pipeline.core.store import atomic_write_text
from trainer.bridge.evaluate import bridge_section, is_mox_run
from trainer.checks import check_eval_run, check_passthrough, run_config
from trainer.eval.baselines import baselines
from trainer.eval.duplicates import caption_groups, find_duplicates
from trainer.eval.retrieval import recall
from trainer.eval.space import Space
from trainer.eval.zero_shot import eshot, zero_shot

log = logging.getLogger(__name__)


def recorded_train(manifest: Manifest, config: dict[str, Any]) -> TrainConfig:
    """The ``[train]`` section the run was trained with (from its config.json); the manifest's when
    the run recorded none or it no longer loads."""
    recorded = config.get("manifest", {}).get("train")
    if not recorded:
        return manifest.train
    try:
        return from_dict({**manifest.to_dict(), "train": recorded}).train
    except ManifestError as exc:
        log.warning("the run's recorded [train] section does not load (%s); using the manifest's", exc)
        return manifest.train


def run(manifest: Manifest) -> dict[str, Any]:
    """Evaluate ``[eval] run`` (default ``[train] run``); write and return its metrics."""
    e, layout = manifest.eval, manifest.layout
    run_layout = check_eval_run(e, manifest.train, layout)
    train = recorded_train(manifest, run_config(run_layout))
    check_passthrough(train, layout)
    space = Space.load(layout, run_layout, train)
    labels = sample_labels(layout, e.label_key)
    hashes = member_hashes(layout)
    duplicates = find_duplicates(space, layout, hashes, e.split, e.near_duplicate, e.drop_duplicates)
    groups = {m: caption_groups(space, hashes, m) for m in space.mods} if hashes else None
    metrics: dict[str, Any] = recall(space, e.split, e.ks, caption_groups=groups)
    metrics["zero_shot"] = zero_shot(space, layout.classes, labels, e.split)
    metrics["eshot"] = eshot(space, e.eshot, labels, e.split)
    metrics["baselines"] = baselines(train, layout, space, e.split, e.ks, e.ridge_lambda, groups)
    metrics["duplicates"] = duplicates
    metrics["early_stopping"] = space.config.get("train_summary", {}).get("early_stopping")
    if is_mox_run(space.config):  # a train.bridge run: a <-> c over the evaluation items
        metrics["bridge"] = bridge_section(manifest, run_layout, space.config, e.ks)
    atomic_write_text(run_layout.metrics, json.dumps(metrics, indent=2))  # readers never see half a file
    log.info("metrics of %s written to %s", run_layout.root.name, run_layout.metrics)
    return metrics
