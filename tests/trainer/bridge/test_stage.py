"""`bindery bridge` on planted truth: the store it writes, its config.json, and how close the pseudo
vectors come to the withheld true ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import STAGES
from pipeline.cli import main as cli_main
from pipeline.core.manifest import ManifestError
from pipeline.core.store import read_store
from tests.trainer.bridge.conftest import bridge_manifest, numpy_ridge, unit
from trainer.bridge import stage


def test_writes_pseudo_stores_keyed_by_the_other_set(planted_bridge):
    pl = planted_bridge
    config = stage.run(bridge_manifest(pl.output, {"route": "cross-modal", "ridge_lambda": 0.5}))
    root = bridge_manifest(pl.output).layout.bridge("mox")
    audio, image = read_store(root.root, "audio"), read_store(root.root, "image")
    assert list(audio.keys) == list(pl.keys[pl.d1]) and list(image.keys) == list(pl.keys[pl.d2])
    assert audio.dim == 24 and audio.metadata["pseudo"] is True and audio.metadata["encoder"] == "bridge:mox"
    np.testing.assert_allclose(np.linalg.norm(audio.vectors, axis=1), 1.0, atol=1e-5)  # like the real store
    # cross-modal pseudo audio for D1 = unit(P_1 W + b), W fitted on D2's (text, audio) pairs
    w, b = numpy_ridge(pl.vectors["text"][pl.d2], pl.vectors["audio"][pl.d2], 0.5)
    np.testing.assert_allclose(audio.vectors, unit(pl.vectors["text"][pl.d1] @ w + b), atol=1e-5)
    on_disk = json.loads(root.derived_config.read_text())
    assert on_disk == config
    assert config["sizes"] == {"d1": 400, "d2": 400, "evaluation": 200}
    assert config["pseudo"] == {"audio": "d1", "image": "d2"}
    report = config["transitions"]["audio_for_d1"]["cross-modal"]
    assert report["lambda"] == 0.5 and report["lambda_from"] == "manifest" and report["n_val"] == 40
    assert set(config["stores"]) == {"text", "image", "audio"}


def test_pseudo_vectors_approach_the_withheld_truth(planted_bridge):
    """c = unit(unit(p M2) + 0.3 e / sqrt(24)): the best any map of p can do is the direction
    unit(p M2), whose cosine to c is about 1 / sqrt(1 + 0.3^2) = 0.958 (the oracle, computed below on
    the same items). The cross-modal route learns a 32 -> 24 affine map from 400 pairs (about 13 rows
    per parameter column), so it must come within 0.03 of the oracle. The local sample-space route
    combines only 16 neighbours' pivots in 32 dims, which cannot span each pivot: it must still beat
    0.7, and 'both' (their mean) must lie above the local route alone. Over all of D2 (neighbors = 0,
    the kernel form) the sample-space route is ridge without a bias: as close to the oracle."""
    pl = planted_bridge
    truth = pl.vectors["audio"][pl.d1]
    oracle = float(np.mean(np.sum(truth * unit(pl.vectors["text"][pl.d1] @ pl.maps["audio"]), axis=1)))
    assert 0.94 < oracle < 0.97
    cosines = {}
    for route, neighbors in (("cross-modal", 16), ("cross-dataset", 16), ("cross-dataset", 0), ("both", 16)):
        name = f"{route}-{neighbors}"
        stage.run(bridge_manifest(pl.output, {"route": route, "name": name, "neighbors": neighbors}))
        pseudo = read_store(bridge_manifest(pl.output).layout.bridge(name).root, "audio")
        cosines[route if neighbors else "kernel"] = float(np.mean(np.sum(truth * pseudo.vectors, axis=1)))
    assert cosines["cross-modal"] > oracle - 0.03, cosines  # measured 0.955 against an oracle of 0.960
    assert cosines["kernel"] > oracle - 0.03, cosines  # all of D2: ridge without a bias (module doc), 0.955
    assert cosines["cross-dataset"] > 0.7, cosines  # measured 0.84
    assert cosines["both"] > cosines["cross-dataset"], cosines
    # a random other item's true c is the no-information reference
    assert abs(float(np.mean(np.sum(truth * np.roll(truth, 1, axis=0), axis=1)))) < 0.15


def test_bad_bridge_keys_are_manifest_errors(planted_bridge):
    pl = planted_bridge
    with pytest.raises(ManifestError, match="bridge.modalities"):
        bridge_manifest(pl.output, {"modalities": ["image", "text"]})  # the pivot itself
    with pytest.raises(ManifestError, match="bridge.modalities"):
        stage.run(bridge_manifest(pl.output, {"modalities": []}))
    with pytest.raises(ManifestError, match="bridge.folds"):
        bridge_manifest(pl.output, {"folds": 1})
    with pytest.raises(ManifestError, match="'points'"):
        stage.run(bridge_manifest(pl.output, {"modalities": ["image", "points"]}))  # no such store
    with pytest.raises(ManifestError, match="bridge.name"):
        stage.run(bridge_manifest(pl.output, {"name": "../x"}))


def test_cli_runs_the_bridge_stage_from_the_shipped_manifest(planted_bridge, capsys):
    """manifests/brokenbind.toml with its output pointed at the planted stores."""
    assert STAGES["bridge"][0] == "trainer.bridge.stage:run"
    manifest = str(Path(__file__).resolve().parents[3] / "manifests" / "brokenbind.toml")
    common = ["--set", f"dataset.output={planted_bridge.output}", "--set", "bridge.route=cross-modal"]
    assert cli_main(["bridge", manifest, *common, "--set", "bridge.name=viacli"]) == 0
    assert json.loads(capsys.readouterr().out)["sizes"] == {"d1": 400, "d2": 400, "evaluation": 200}
    assert cli_main(["bridge", manifest, *common, "--set", "bridge.folds=0"]) == 2
    assert "bridge.folds" in capsys.readouterr().err
