"""`bindery bridge`: MOX pseudo embeddings for two modalities that never co-occur.

Reads the pivot's and the two modalities' stores, splits the keys (:mod:`~trainer.bridge.splits`),
fits the configured route(s) (:mod:`~trainer.bridge.transitions`) in both directions and writes
``<output>/bridge/<name>/`` in the store format:

* ``embeddings/<c>/``: pseudo ``c`` vectors keyed by D1's keys (fitted on D2);
* ``embeddings/<a>/``: pseudo ``a`` vectors keyed by D2's keys (fitted on D1);
* ``config.json``: how they were made: route, lambda per route and direction (and the CV grid),
  sizes, the fit's R^2 and mean cosine on a validation slice, the source stores' fingerprints.

With ``route = "both"`` a pseudo vector is the mean of the two routes'. Pseudo vectors follow their
modality's store: its dtype, and unit norm when the store is normalised. The evaluation items (keys with both modalities) are never read.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import BridgeConfig, Manifest, ManifestError
from pipeline.core.store import (
    Store,
    atomic_write_text,
    list_parts,
    read_store,
    store_fingerprint,
    write_embeddings,
)
from trainer.bridge.splits import BridgeSplit, bridge_modalities, load_split
from trainer.bridge.transitions import FITS, ROUTES, FitSettings, Pairing, quality
from trainer.data.rows import key_index

log = logging.getLogger(__name__)
PART_ROWS = 65536  # rows per written part


def settings(b: BridgeConfig) -> FitSettings:
    return FitSettings(b.ridge_lambda, b.neighbors, b.folds, b.val_fraction, b.memory_gb, b.seed)


def routes(b: BridgeConfig) -> tuple[str, ...]:
    return ROUTES if b.route == "both" else (b.route,)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def rows_of(store: Store, keys: np.ndarray) -> np.ndarray:
    idx = key_index(store.keys, keys)
    if (idx < 0).any():  # pragma: no cover - the split comes from these stores' keys
        raise RuntimeError(f"{store.modality}: {int((idx < 0).sum())} split keys are not in the store")
    return store.vectors[idx]


def make_direction(pair: Pairing, target: Store, b: BridgeConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Pseudo ``target`` vectors for ``pair.query_pivots`` by the configured route(s), and their report.
    ``both`` is the mean of the two routes' vectors; the result is L2-normalised when the store is."""
    made, reports = [], {}
    for route in routes(b):
        pseudo, fit = FITS[route](pair, settings(b))
        truth = pair.bank_targets[fit.val_rows]
        reports[route] = fit.summary(truth)
        made.append((pseudo, fit))
        log.info("bridge %s: %s for %d items, lambda %.3g, validation R^2 %.3f, cosine %.3f", route,
                 target.modality, len(pseudo), fit.lam, reports[route]["r2_val"], reports[route]["cosine_val"])
    vectors = np.mean([v for v, _ in made], axis=0) if len(made) > 1 else made[0][0]
    if len(made) > 1:
        reports["both"] = quality(truth, np.mean([f.val_prediction for _, f in made], axis=0))
    normalized = bool(target.metadata.get("normalized", False))
    return (unit(vectors) if normalized else vectors).astype(np.float32), reports


def write_store(layout: OutputLayout, target: Store, keys: np.ndarray, vectors: np.ndarray, b: BridgeConfig) -> None:
    folder = layout.embeddings(target.modality)
    for old in list_parts(folder):
        old.unlink()
    meta = target.metadata
    dtype = meta.get("dtype", "float32") if meta.get("dtype") in ("float16", "float32") else "float32"
    metadata = {"encoder": f"bridge:{b.name}", "source_encoder": meta.get("encoder"),
                "source_digest": meta.get("digest"), "dim": int(vectors.shape[1]), "dtype": dtype,
                "normalized": bool(meta.get("normalized", False)), "modality": target.modality, "pseudo": True,
                "route": b.route, "space": meta.get("space")}
    for i, start in enumerate(range(0, max(len(keys), 1), PART_ROWS)):
        write_embeddings(layout.embedding_part(target.modality, f"{i:06d}"), list(keys[start:start + PART_ROWS]),
                         vectors[start:start + PART_ROWS], dtype=dtype, metadata=metadata)


def check(manifest: Manifest) -> tuple[str, str]:
    b = manifest.bridge
    if not b.name.strip() or "/" in b.name or b.name.startswith("."):
        raise ManifestError(f"bridge.name: {b.name!r} must be a plain folder name, like \"mox\"")
    return bridge_modalities(b)


def run(manifest: Manifest) -> dict[str, Any]:
    """Write ``<output>/bridge/<name>/``; return its config (what ``config.json`` holds)."""
    a, c = check(manifest)
    b, out = manifest.bridge, manifest.output
    start = time.perf_counter()
    split = load_split(out, b.pivot, a, c)
    log.info("bridge %s: D1 %d (%s + %s), D2 %d (%s + %s), %d evaluation items left out", b.name, len(split.d1),
             a, b.pivot, len(split.d2), c, b.pivot, len(split.evaluation))
    stores = {m: read_store(out, m) for m in (b.pivot, a, c)}
    p1, p2 = rows_of(stores[b.pivot], split.d1), rows_of(stores[b.pivot], split.d2)
    a1, c2 = rows_of(stores[a], split.d1), rows_of(stores[c], split.d2)
    try:
        pseudo_c, report_c = make_direction(Pairing(p2, c2, p1), stores[c], b)
        pseudo_a, report_a = make_direction(Pairing(p1, a1, p2), stores[a], b)
    except ValueError as exc:
        raise ManifestError(f"bridge.folds / bridge.val_fraction: {exc}; lower them or add items") from None
    layout = manifest.layout.bridge(b.name)
    layout.derived_config.unlink(missing_ok=True)  # a half-rewritten bridge has no config: train refuses it
    write_store(layout, stores[c], split.d1, pseudo_c, b)
    write_store(layout, stores[a], split.d2, pseudo_a, b)
    config = describe(manifest, split, {f"{c}_for_d1": report_c, f"{a}_for_d2": report_a}, stores)
    config["seconds"] = round(time.perf_counter() - start, 2)
    atomic_write_text(layout.derived_config, json.dumps(config, indent=2))
    log.info("bridge %s written to %s", b.name, layout.root)
    return config


def describe(manifest: Manifest, split: BridgeSplit, reports: dict[str, Any], stores: dict[str, Store]) -> dict:
    b = manifest.bridge
    return {"name": b.name, "pivot": b.pivot, "modalities": [split.a, split.c], "route": b.route,
            "ridge_lambda": b.ridge_lambda, "neighbors": b.neighbors, "folds": b.folds, "val_fraction": b.val_fraction,
            "seed": b.seed, "sizes": split.sizes(), "dims": {m: s.dim for m, s in stores.items()},
            "pseudo": {split.c: "d1", split.a: "d2"}, "transitions": reports,
            "stores": {m: store_fingerprint(manifest.output, m) for m in stores}}
