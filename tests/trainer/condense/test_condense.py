"""ImageBindDC end to end on planted classes: the condensed set is a store, its probe is close to
full data and beats random real pairs of the same count, and the loss falls."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.core.manifest import ManifestError, from_dict
from pipeline.core.store import read_store
from tests.trainer.condense.planted import manifest_for, planted_classes
from trainer.condense import stage
from trainer.condense.optimise import condense
from trainer.condense.probe import SmallSet, probe_accuracy, random_subset
from trainer.condense.sets import load_pairs, split, training_pairs
from trainer.condense.space import Space

SEEDS = 3


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted-classes")
    planted_classes(out, classes=6, per_class=150, noise=0.5, spread=1.0, seed=0)
    return out


@pytest.fixture(scope="module")
def sides(planted):
    m = manifest_for(planted)
    train = training_pairs(m, Space(m))
    _, held_out = split(load_pairs(m, Space(m)), m.train.seed, m.train.val_fraction)
    return m, train, held_out


def fused(vectors):
    return np.concatenate([v.reshape(-1, v.shape[-1]) for v in vectors.values()], axis=1)


def test_condensed_pairs_near_full_data_and_above_random_real_pairs(sides):
    """At 10 per class (6 % of a class's 105 training pairs) the probe on condensed pairs must keep at
    least 95 % of the full-data accuracy: distribution matching puts the set on each class's mean and
    spread, which is what a linear probe needs; random draws of 10 keep about 96 % on this data, with
    a spread of about 2 points, and the condensed mean over seeds must beat theirs."""
    m, train, held_out = sides
    test = SmallSet.of(held_out)
    full = probe_accuracy(SmallSet.of(train), test, m.condense.probe_c)
    y = np.repeat(np.arange(len(train.classes)), 10)
    condensed = [probe_accuracy(SmallSet(fused(condense(train, dataclasses.replace(m.condense, seed=s), 10,
                                                        progress=False).vectors), y), test, m.condense.probe_c)
                 for s in range(SEEDS)]
    random = [probe_accuracy(SmallSet.of(random_subset(train, 10, s)), test, m.condense.probe_c) for s in range(5)]
    assert full > 0.6  # the classes overlap: room for a small set to lose accuracy
    assert np.mean(condensed) >= 0.95 * full, (condensed, full)
    assert np.mean(condensed) > np.mean(random), (condensed, random)


def test_the_loss_falls_and_items_stay_unit_norm(sides):
    m, train, _ = sides
    result = condense(train, m.condense, 10, progress=False)
    total = np.array(result.curves.total)
    tenth = len(total) // 10
    assert total[-tenth:].mean() < 0.5 * total[:tenth].mean()
    for v in result.vectors.values():
        assert v.shape == (6, 10, 32)
        np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(total, np.array(result.curves.uni) + np.array(result.curves.cross)
                               + np.array(result.curves.joint), rtol=1e-5)


def test_noise_init_falls_too(sides):
    m, train, _ = sides
    result = condense(train, dataclasses.replace(m.condense, init="noise", steps=60), 3, progress=False)
    total = np.array(result.curves.total)
    assert total[-6:].mean() < total[:6].mean()


def test_condense_writes_a_store_that_train_and_eval_read(planted, tmp_path, capsys):
    m = manifest_for(planted, per_class=[2, 5], steps=20)
    summary = stage.run(m)
    assert [s["per_class"] for s in summary["sets"]] == [2, 5]
    lay = m.layout.condensed_set("planted", 5)
    img, txt = read_store(lay.root, "image"), read_store(lay.root, "text")
    assert list(img.keys) == list(txt.keys) and len(img) == 30
    assert img.keys[0] == "syn-class0-0" and img.keys[-1] == "syn-class5-4"
    meta = {k: json.loads(v) for k, v in zip(*_metadata(lay), strict=True)}
    assert meta["syn-class3-2"]["label"] == "class3"
    config = json.loads(lay.derived_config.read_text())
    assert len(config["curves"]["total"]) == 20 and config["seconds"] > 0 and config["per_class"] == 5
    assert lay.plot("loss").is_file()
    # the store contract: bindery train and eval on the condensed folder, unchanged
    toml = tmp_path / "c.toml"
    toml.write_text(f'[dataset]\nname = "c"\nshards = "x-{{0..1}}.tar"\noutput = "{lay.root}"\n'
                    '[modalities.image]\nencoder = "planted-image"\n[modalities.text]\nencoder = "planted-text"\n'
                    '[train]\nanchor = "text"\nhidden = 32\nepochs = 2\nbatch_size = 16\nval_fraction = 0.2\n'
                    f'[publish]\nfolder = "{tmp_path / "bundle"}"\n')
    capsys.readouterr()
    assert main(["train", str(toml)]) == 0
    assert main(["eval", str(toml)]) == 0
    metrics = json.loads(lay.run("default").metrics.read_text())
    assert "image->text" in metrics and metrics["image->text"]["n"] > 0
    assert main(["publish", str(toml)]) == 0
    assert main(["publish", "--verify", str(tmp_path / "bundle")]) == 0


def _metadata(layout):
    import pyarrow.parquet as pq

    table = pq.read_table(layout.metadata_part("000000"))
    return table.column("key").to_pylist(), table.column("json").to_pylist()


def test_config_errors_name_the_key(planted):
    with pytest.raises(ManifestError, match="condense.modalities"):
        manifest_for(planted, modalities=["image"])
    with pytest.raises(ManifestError, match="condense.per_class"):
        manifest_for(planted, per_class=[10, 10])
    with pytest.raises(ManifestError, match="condense.space: run 'nope'"):
        stage.run(manifest_for(planted, space="nope"))
    with pytest.raises(ManifestError, match="condense.modalities: no embedding store for \\['audio'\\]"):
        stage.run(manifest_for(planted, modalities=["image", "audio"]))
    with pytest.raises(ManifestError, match="condense.label_key"):
        stage.run(manifest_for(planted, label_key="nothing"))
    with pytest.raises(ManifestError, match="condense.min_items"):
        stage.run(manifest_for(planted, min_items=10_000))
    other = planted.parent / "planted-other-dims"
    planted_classes(other, classes=3, per_class=20, dims=(32, 24))
    with pytest.raises(ManifestError, match="condense.cross_weight: the cross-modal term needs one dim"):
        stage.run(manifest_for(other))
    raw = {"dataset": {"name": "x", "shards": "a.tar", "output": str(planted)},
           "modalities": {"image": {"encoder": "e"}}, "condense": {"init": "pixels"}}
    with pytest.raises(ManifestError, match="condense.init"):
        from_dict(raw)


def test_condense_in_a_runs_space_maps_every_modality_through_its_heads(tmp_path):
    """Modalities of different dims cannot take the cross-modal term in the raw stores; a run's anchor
    space gives them one dim, and the condensed store says which space it is in."""
    import torch

    from pipeline.core.heads_file import load_heads, project
    from trainer.train import run as train

    planted_classes(tmp_path, classes=3, per_class=40, dims=(32, 24))
    with pytest.raises(ManifestError, match="condense.cross_weight"):
        stage.run(manifest_for(tmp_path, per_class=[2], steps=5))
    m = manifest_for(tmp_path, per_class=[2], steps=5, space="bound")
    train(dataclasses.replace(m, train=dataclasses.replace(m.train, run="bound", epochs=2)))
    space = Space(m)
    heads, _ = load_heads(m.layout.run("bound").root)
    image = read_store(tmp_path, "image")
    np.testing.assert_allclose(space.map("image", image.vectors[:5]),
                               project(heads["image"], torch.from_numpy(np.array(image.vectors[:5]))).numpy(), rtol=1e-6)
    stage.run(m)
    out = read_store(m.layout.condensed_set("planted", 2).root, "image")
    assert out.dim == 24 and out.metadata["space"] == "run:bound"
    assert read_store(m.layout.condensed_set("planted", 2).root, "text").metadata["space"] == "run:bound"
