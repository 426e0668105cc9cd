"""`bindery condense-eval` against scikit-learn run here on the same split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from pipeline.cli import main
from pipeline.core.store import read_store
from tests.trainer.condense.planted import manifest_for, planted_classes
from trainer.data.rows import is_val


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    truth = planted_classes(out, classes=4, per_class=40, noise=0.5, seed=3)
    m = manifest_for(out, per_class=[3, 40], steps=15, seeds=2, evaluate=True)
    toml = out / "m.toml"
    toml.write_text(f'[dataset]\nname = "p"\nshards = "x-{{0..1}}.tar"\noutput = "{out}"\n'
                    '[modalities.image]\nencoder = "planted-image"\n[modalities.text]\nencoder = "planted-text"\n'
                    '[train]\nanchor = "text"\nmodalities = ["image"]\nhidden = 32\nepochs = 3\nbatch_size = 32\n'
                    'val_fraction = 0.3\nuse_quintuples = false\n'
                    '[condense]\nname = "planted"\nper_class = [3, 40]\nsteps = 15\nfrequencies = 256\nseeds = 2\n')
    assert main(["condense", str(toml)]) == 0
    assert main(["condense-eval", str(toml)]) == 0
    return m, truth, json.loads(m.layout.condensed_report("planted").report_json.read_text())


def probe(x, y, xt, yt, c):
    return LogisticRegression(C=c, max_iter=5000).fit(x, y).score(xt, yt)


def test_full_and_condensed_probes_match_scikit_learn(reported):
    m, truth, report = reported
    val = is_val(truth["keys"], m.train.seed, m.train.val_fraction)
    x = np.concatenate([truth["image"], truth["text"]], axis=1)
    full = probe(x[~val], truth["label"][~val], x[val], truth["label"][val], m.condense.probe_c)
    assert report["probe"]["full_accuracy"] == pytest.approx(full, abs=1e-6)
    assert report["held_out_pairs"] == int(val.sum()) and report["train_pairs"] == int((~val).sum())
    lay = m.layout.condensed_set("planted", 3)
    img, txt = read_store(lay.root, "image"), read_store(lay.root, "text")
    y = np.array([int(k.split("-")[1][len("class"):]) for k in img.keys])
    got = probe(np.concatenate([img.vectors, txt.vectors], 1), y, x[val], truth["label"][val], m.condense.probe_c)
    size = report["sizes"][0]
    assert size["per_class"] == 3 and size["items"] == 12
    assert size["condensed"]["accuracy"] == pytest.approx(got, abs=1e-6)
    assert size["condensed"]["share"] == pytest.approx(got / full, abs=1e-5)


def test_baselines_at_a_size_past_every_class_are_the_full_data(reported):
    _, _, report = reported
    big = report["sizes"][1]
    full = report["probe"]["full_accuracy"]
    # 40 per class is more than any class's training pairs: random takes them all, and k-means with one
    # centre per pair returns the pairs themselves
    assert big["random"]["accuracies"] == [pytest.approx(full, abs=1e-6)] * 2
    assert big["herding"]["accuracy"] == pytest.approx(full, abs=1e-3)


def test_heads_recall_and_shares(reported):
    m, _, report = reported
    full = report["heads"]["full"]
    assert set(full) == {"image->text", "text->image"}
    for size in report["sizes"]:
        for kind in ("condensed", "random"):
            rec, share = size["heads"][kind], size["heads"][f"{kind}_share_of_full"]
            for pair in full:
                assert 0 <= rec[pair]["R@1"] <= 1 and rec[pair]["n"] == report["held_out_pairs"]
                assert share[pair]["R@1"] == pytest.approx(rec[pair]["R@1"] / full[pair]["R@1"], abs=1e-5)
    assert m.layout.condensed_report("planted").plot("accuracy").is_file()


def test_condense_eval_before_condense_names_the_command(tmp_path, capsys):
    planted_classes(tmp_path, classes=3, per_class=20)
    toml = tmp_path / "m.toml"
    toml.write_text(f'[dataset]\nname = "p"\nshards = "x-{{0..1}}.tar"\noutput = "{tmp_path}"\n'
                    '[modalities.image]\nencoder = "planted-image"\n[modalities.text]\nencoder = "planted-text"\n'
                    '[condense]\nname = "none-yet"\nper_class = [2]\n')
    assert main(["condense-eval", str(toml)]) == 2
    assert "run `bindery condense` first" in capsys.readouterr().err
