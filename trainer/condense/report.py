"""`bindery condense-eval`: the paper's protocol -> ``<output>/condensed/<name>/report.json`` (+ ``accuracy.png``).

Train on a small set, test on the real held-out split (the trainer's rule on the sample key, so
condensation never saw these pairs). For each size in ``condense.per_class``:

* probe: logistic regression on the fused pair ``[a; b]`` (:mod:`trainer.condense.probe`), for the
  condensed set, random real pairs of the same count per class (mean and spread over
  ``condense.seeds`` draws) and k-means centres of each class (herding), as accuracy and as a
  share of the probe trained on every training pair;
* heads: `bindery train` on the condensed set against `bindery train` on every training pair,
  Recall@K on the held-out pairs (:mod:`trainer.condense.heads`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.manifest import Manifest, ManifestError
from pipeline.core.plots import pyplot, save_png
from pipeline.core.samples import sample_labels
from pipeline.core.store import atomic_write_text, read_store
from trainer.condense import heads
from trainer.condense.probe import (
    RandomScore,
    Score,
    SmallSet,
    kmeans_centres,
    probe_accuracy,
    random_score,
    random_subset,
)
from trainer.condense.sets import LabelledPairs, check_stores, keep_classes, load_pairs, split, training_pairs
from trainer.condense.space import Space

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SizeReport:
    per_class: int
    items: int  # synthetic pairs in the set
    condensed: Score
    random: RandomScore
    herding: Score
    heads: dict[str, Any]  # Recall@K of heads trained on the set and on random real pairs, and shares of the full run's
    condense_seconds: float  # wall time of the set's optimisation loop (its config.json)


def check_sets(manifest: Manifest) -> None:
    """Every size of ``condense.per_class`` has a condensed set (before any work)."""
    c = manifest.condense
    for n in c.per_class:
        layout = manifest.layout.condensed_set(c.name, n)
        if not layout.derived_config.is_file():
            raise ManifestError(f"condense.per_class: no condensed set {layout.root} for {n} per class; "
                                "run `bindery condense` first (same [condense] section)")


def read_set(manifest: Manifest, per_class: int, classes: list[str]) -> tuple[LabelledPairs, dict]:
    """A condensed set as labelled pairs (its stores and metadata) and its config."""
    c = manifest.condense
    layout = manifest.layout.condensed_set(c.name, per_class)
    config = json.loads(layout.derived_config.read_text())
    if config["classes"] != classes:
        raise ManifestError(f"condense: {layout.root} was condensed over other classes than the current manifest "
                            "gives; re-run `bindery condense`")
    labels = sample_labels(layout, c.label_key)
    stores = {m: read_store(layout.root, m) for m in c.modalities}
    keys = stores[c.modalities[0]].keys
    for m, s in stores.items():
        if list(s.keys) != list(keys):
            raise ValueError(f"{layout.embeddings(m)}: keys differ from {layout.embeddings(c.modalities[0])}")
    cls = {name: i for i, name in enumerate(classes)}
    label = np.array([cls[labels[k]] for k in keys], np.int64)
    return LabelledPairs(keys, label, classes, {m: np.asarray(s.vectors, np.float32) for m, s in stores.items()}), config


@dataclass(frozen=True)
class Reference:
    """What every size is measured against: the real pairs, and the probe and heads fitted on all of them."""

    train: LabelledPairs
    held_out: LabelledPairs
    test: SmallSet  # the held-out pairs as probe features
    accuracy: float  # the probe fitted on every training pair
    recall: dict[str, Any]  # heads trained on every training pair
    steps: int  # their optimisation steps (every small set's heads get as many)


def heads_on(manifest: Manifest, output, items: int, ref: Reference) -> dict[str, Any]:
    """Held-out Recall@K of heads that `bindery train` fits on the store at ``output`` (all of it)."""
    epochs = heads.epochs_for(ref.steps, items, manifest.train.batch_size)
    run = heads.train(manifest, output, epochs, heads.ALL_TRAIN)
    return heads.held_out_recall(run, ref.held_out, heads.anchor_of(manifest), manifest.eval.ks)


def size_report(manifest: Manifest, space: Space, n: int, ref: Reference) -> SizeReport:
    c, ks = manifest.condense, manifest.eval.ks
    syn, config = read_set(manifest, n, ref.train.classes)
    condensed = Score.of(probe_accuracy(SmallSet.of(syn), ref.test, c.probe_c), ref.accuracy)
    random = random_score(ref.train, ref.test, n, c.seeds, c.seed, c.probe_c, ref.accuracy)
    herding = Score.of(probe_accuracy(kmeans_centres(ref.train, n, c.seed), ref.test, c.probe_c), ref.accuracy)
    recall = heads_on(manifest, manifest.layout.condensed_set(c.name, n).root, len(syn), ref)
    subset = random_subset(ref.train, n, c.seed * 7919)  # the first of the probe's random draws
    scratch = manifest.layout.condensed_report(c.name).work(f"random-{n}")
    heads.write_real_store(manifest, space, subset, scratch)
    random_recall = heads_on(manifest, scratch.root, len(subset), ref)
    log.info("condense-eval %d/class: probe condensed %.3f, random %.3f +- %.3f, herding %.3f, full %.3f; "
             "heads R@1 condensed %.3f, random %.3f, full %.3f", n, condensed.accuracy, random.accuracy_mean,
             random.accuracy_std, herding.accuracy, ref.accuracy, heads.mean_recall(recall),
             heads.mean_recall(random_recall), heads.mean_recall(ref.recall))
    return SizeReport(n, len(syn), condensed, random, herding,
                      {"condensed": recall, "random": random_recall,
                       "condensed_share_of_full": heads.share(recall, ref.recall, ks),
                       "random_share_of_full": heads.share(random_recall, ref.recall, ks)}, config["seconds"])


def write_plot(path, sizes: list[SizeReport], full: float, title: str) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 3.5), dpi=100)
    x = np.arange(len(sizes))
    bars = [("condensed", [s.condensed.accuracy for s in sizes], None),
            ("random real", [s.random.accuracy_mean for s in sizes], [s.random.accuracy_std for s in sizes]),
            ("herding (k-means)", [s.herding.accuracy for s in sizes], None)]
    for i, (label, values, err) in enumerate(bars):
        ax.bar(x + (i - 1) * 0.27, values, 0.27, yerr=err, label=label, capsize=3)
    ax.axhline(full, color="k", linestyle="--", linewidth=1, label=f"full data {full:.3f}")
    ax.set_xticks(x, [f"{s.per_class}/class" for s in sizes])
    ax.set_ylabel("held-out accuracy (linear probe)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_png(fig, path)


def run(manifest: Manifest) -> dict[str, Any]:
    """Score every condensed set of ``[condense]``; write and return the report."""
    c, t = manifest.condense, manifest.train
    start = time.perf_counter()
    check_stores(manifest)
    check_sets(manifest)
    space = Space(manifest)
    train = training_pairs(manifest, space)
    _, held_out = split(load_pairs(manifest, space), t.seed, t.val_fraction)
    held_out = keep_classes(held_out, train.classes)
    if not len(held_out):
        raise ManifestError(f"train.val_fraction: no held-out pair in the condensed classes; raise it "
                            f"(now {t.val_fraction})")
    test = SmallSet.of(held_out)
    full = probe_accuracy(SmallSet.of(train), test, c.probe_c)
    report = manifest.layout.condensed_report(c.name)
    real = report.work("real")
    heads.write_real_store(manifest, space, keep_classes(load_pairs(manifest, space), train.classes), real)
    full_run = heads.train(manifest, real.root, t.epochs, t.val_fraction)
    ref = Reference(train, held_out, test, full,
                    heads.held_out_recall(full_run, held_out, heads.anchor_of(manifest), manifest.eval.ks),
                    heads.steps_of(len(train), t.batch_size, t.epochs))
    sizes = [size_report(manifest, space, n, ref) for n in c.per_class]
    out = {"name": c.name, "space": c.space, "modalities": list(c.modalities), "classes": train.classes,
           "train_pairs": len(train), "held_out_pairs": len(held_out),
           "split": {"seed": t.seed, "val_fraction": t.val_fraction},
           "probe": {"features": "[" + "; ".join(c.modalities) + "]", "C": c.probe_c, "full_accuracy": round(full, 6),
                     "random_seeds": c.seeds},
           "heads": {"steps": ref.steps, "full": ref.recall},
           "sizes": [dataclasses.asdict(s) for s in sizes], "seconds": round(time.perf_counter() - start, 2)}
    atomic_write_text(report.report_json, json.dumps(out, indent=2))
    write_plot(report.plot("accuracy"), sizes, full, f"{c.name}: {len(train.classes)} classes, "
               f"{len(held_out)} held-out pairs")
    log.info("condense report written to %s", report.report_json)
    return out
