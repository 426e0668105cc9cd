"""`train.bridge` on planted truth: the rows the trainer builds, MOX against the emergent route, and
the eval's `bridge` section against NumPy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.core.manifest import ManifestError
from pipeline.core.store import write_embeddings
from tests.trainer.bridge.conftest import bridge_manifest, numpy_ridge, unit
from trainer import train
from trainer.bridge import stage
from trainer.bridge.data import load_bridge
from trainer.eval import evaluate


def row_keys(data) -> set[str]:
    """Every key a training row of ``data`` touches: anchors, real partners and pseudo partners."""
    used = set()
    rows = data.rows
    for r in data.train_idx:
        used.add(data.keys[data.anchor][rows.anchor[r]])
        for m in data.modalities:
            if rows.partner[m][r] >= 0:
                used.add(data.keys[m][rows.partner[m][r]])
    split = data.split
    for m, made in ((split.c, split.d1), (split.a, split.d2)):
        if m in data.pseudo_index:
            idx = data.pseudo_index[m][data.train_idx]
            used.update(made[idx[idx >= 0]])  # the bridge store of pseudo m is keyed by that set, in order
    return used


def test_evaluation_items_never_reach_a_training_row(planted_bridge):
    pl = planted_bridge
    manifest = bridge_manifest(pl.output)
    stage.run(manifest)
    evaluation = set(pl.keys[pl.evaluation])
    for pseudo in (True, False):
        data = load_bridge(manifest.train, manifest.layout, "cpu", pseudo=pseudo)
        used = row_keys(data)
        assert used and not used & evaluation
        assert len(data.rows) == 800 and 40 < len(data.val_idx) < 120  # D1 + D2 rows, 10 % held out
        d1_rows = data.rows.partner["image"] >= 0
        assert (data.rows.partner["audio"][d1_rows] == -1).all()  # a D1 row has no real audio...
        if pseudo:  # ...but its pseudo audio, whose key is the row's own
            assert (data.pseudo_index["audio"][d1_rows] >= 0).all()
            batch = data.batch(torch.as_tensor(data.train_idx[:8]), torch.device("cpu"))
            assert all(batch.modalities[m].vectors.abs().sum(1).gt(0).all() for m in ("image", "audio"))


def test_bridge_heads_bind_what_never_met(planted_bridge):
    """200 evaluation items: chance R@1 = 0.005. MOX heads must reach image<->audio R@1 >= 0.6
    (measured 0.765 both ways), at least 0.25 above the emergent route trained on the same rows with
    the same steps (measured 0.415 / 0.44), and 50x chance. (The closed-form composition a -> p -> c
    reaches 0.83 / 0.815 here: with linear planted maps, ridge is the right model.)"""
    pl = planted_bridge
    manifest = bridge_manifest(pl.output)
    stage.run(manifest)
    summary = train.run(manifest)
    assert summary["bridge"] == {"name": "mox", "role": "mox", "d1": 400, "d2": 400, "evaluation": 200,
                                 "emergent_run": "default-emergent"}
    emergent = json.loads(manifest.layout.run("default-emergent").config.read_text())["train_summary"]
    assert emergent["steps"] == summary["steps"] and emergent["train_rows"] == summary["train_rows"]
    section = evaluate.run(manifest)["bridge"]
    assert section["items"] == 200
    for direction in ("image->audio", "audio->image"):
        mox, base = section["mox"][direction]["R@1"], section["emergent"][direction]["R@1"]
        assert section["chance"][direction]["R@1"] == pytest.approx(1 / 200)
        assert mox >= 0.6 and mox >= base + 0.25 and mox >= 50 / 200, (direction, section)
        assert section["mox"][direction]["n"] == 200
        assert set(section["mox"][direction]["eshot"]) == {"top1", "top5", "n", "classes"}
    assert section["chance"]["image->audio"]["eshot"]["top1"] == pytest.approx(1 / 5)


def ridge_map(x, y, lam):
    w, b = numpy_ridge(x, y, lam)
    return lambda v: v @ w + b


def recall_at(queries, gallery, k):
    sims = unit(queries) @ unit(gallery).T
    rank = (sims > np.diag(sims)[:, None]).sum(1)
    return float((rank < k).mean())


def test_ridge_composition_and_eshot_match_numpy(planted_bridge):
    pl = planted_bridge
    manifest = bridge_manifest(pl.output, {"ridge_lambda": 0.5}, epochs=1)
    stage.run(manifest)
    train.run(manifest)
    section = evaluate.run(manifest)["bridge"]
    v, d1, d2, ev = pl.vectors, pl.d1, pl.d2, pl.evaluation
    a_to_p, p_to_c = ridge_map(v["image"][d1], v["text"][d1], 0.5), ridge_map(v["text"][d2], v["audio"][d2], 0.5)
    c_to_p, p_to_a = ridge_map(v["audio"][d2], v["text"][d2], 0.5), ridge_map(v["text"][d1], v["image"][d1], 0.5)
    a_in_c, c_in_a = p_to_c(a_to_p(v["image"][ev])), p_to_a(c_to_p(v["audio"][ev]))
    for k in (1, 5, 10):
        assert section["ridge"]["image->audio"][f"R@{k}"] == pytest.approx(recall_at(a_in_c, v["audio"][ev], k))
        assert section["ridge"]["audio->image"][f"R@{k}"] == pytest.approx(recall_at(c_in_a, v["image"][ev], k))
    # EShot: class vector = unit(mean) of the class's audio among the evaluation items, own partner left out
    labels = np.array([i % 5 for i in ev])
    q, t = unit(a_in_c), unit(v["audio"][ev])
    hits = []
    for i in range(len(ev)):
        protos = [unit(t[(labels == y) & (np.arange(len(ev)) != i)].mean(0, keepdims=True))[0] for y in range(5)]
        scores = np.array([q[i] @ pr for pr in protos])
        hits.append(int((scores > scores[labels[i]]).sum()))
    es = section["ridge"]["image->audio"]["eshot"]
    assert es["top1"] == pytest.approx(np.mean(np.array(hits) < 1), abs=1e-6)
    assert es["top5"] == pytest.approx(np.mean(np.array(hits) < 5), abs=1e-6) and es["classes"] == 5


def test_train_bridge_refuses_a_missing_or_mismatched_bridge(planted_bridge):
    pl = planted_bridge
    with pytest.raises(ManifestError, match="train.bridge"):
        train.run(bridge_manifest(pl.output))  # no `bindery bridge` yet
    stage.run(bridge_manifest(pl.output))
    with pytest.raises(ManifestError, match="train.anchor"):
        train.run(bridge_manifest(pl.output, anchor="image", modalities=["audio"]))
    with pytest.raises(ManifestError, match="train.in_memory"):
        train.run(bridge_manifest(pl.output, in_memory="stream"))
    with pytest.raises(ManifestError, match="train.modalities"):
        train.run(bridge_manifest(pl.output, modalities=["image"]))
    assert not bridge_manifest(pl.output).layout.run("default").root.exists()  # refused before any work
    layout = bridge_manifest(pl.output).layout
    part = sorted(layout.embeddings("audio").glob("part-*.parquet"))[0]
    write_embeddings(part, ["k00400"], pl.vectors["audio"][400:401], dtype="float32",
                     metadata={"encoder": "planted-audio", "dim": 24, "normalized": True, "dtype": "float32"})
    with pytest.raises(ManifestError, match="the 'audio' store changed"):
        train.run(bridge_manifest(pl.output))
