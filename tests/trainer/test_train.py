"""Training on planted-truth stores: retrieval is learnt, emergent pairs work, resume is exact."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.core.split import is_val
from tests.launch import torchrun
from tests.trainer.conftest import DIMS, load_checked, make_manifest
from trainer import train
from trainer.eval import evaluate


def test_training_learns_planted_maps_and_emergent_pairs(planted):
    """audio (24-d) and points (16-d) are noisy random linear maps of text (32-d, noise 0.1). With
    ~100 held-out items chance R@1 is ~1 % and chance R@10 ~10 %. Audio keeps most of text's
    information, so text<->audio must reach R@1 >= 0.8 (measured 0.87-0.99). Points keep only 16
    of text's 32 dims, which bounds what any head can recover: R@1 >= 0.55 (measured 0.67-0.86).
    audio and points never meet in training, only through the text space where both heads' errors
    add up: R@1 >= 0.15 (15x chance; measured 0.26-0.31) and R@10 >= 0.6 (measured 0.75-0.81)."""
    output, _ = planted
    # every training row, 12 epochs: the floors measure what the heads learn (early stopping: below)
    manifest = make_manifest(output, epochs=12, val_fraction=0.25, early_stop_fraction=0.0)
    summary = train.run(manifest)
    assert summary["world_size"] == 1 and summary["modalities"] == ["audio", "points"]
    assert 60 < summary["val_rows"] < 140 and summary["early_stopping"] is None
    metrics = evaluate.run(manifest)
    assert json.loads((output / "runs/default/metrics.json").read_text()) == metrics
    for pair, floor in (("text->audio", 0.8), ("audio->text", 0.8), ("text->points", 0.55), ("points->text", 0.55)):
        assert metrics[pair]["R@1"] >= floor, (pair, metrics[pair])
    for pair in ("audio->points", "points->audio"):
        assert metrics[pair]["n"] == summary["val_rows"]
        assert metrics[pair]["R@1"] >= 0.15 and metrics[pair]["R@10"] >= 0.6, (pair, metrics[pair])
    log = (output / "runs/default/train_log.csv").read_text().splitlines()
    assert log[0] == "step,name,value" and any(",loss," in row for row in log[1:])


def test_untrained_heads_are_near_chance(planted):
    """The same evaluation of heads that barely moved from their random init (lr 1e-7): shows the
    thresholds above are earned by training."""
    output, _ = planted
    manifest = make_manifest(output, epochs=1, val_fraction=0.25, run="early", lr=1e-7)
    train.run(manifest)
    metrics = evaluate.run(manifest)
    assert metrics["audio->points"]["R@1"] < 0.15
    assert metrics["text->audio"]["R@1"] < 0.5


def test_resume_equals_uninterrupted(planted):
    output, _ = planted
    opts = {"epochs": 2, "dropout": 0.1, "queue_size": 32, "checkpoint_every": 3}
    train.run(make_manifest(output, run="straight", **opts))
    stopped = train.run(make_manifest(output, run="resumed", **opts), stop_after_steps=5)
    assert stopped["stopped_at"] == 5 and stopped["total_steps"] > 5
    assert not (output / "runs/resumed/heads.safetensors").exists()
    resumed = train.run(make_manifest(output, run="resumed", **opts))
    assert resumed["resumed_from_step"] == 5
    a = load_file(str(output / "runs/straight/heads.safetensors"))
    b = load_file(str(output / "runs/resumed/heads.safetensors"))
    assert a.keys() == b.keys() and len(a) == 8  # 2 heads x 2 Linear x (weight, bias)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and a different seed gives different heads (the comparison can fail)
    train.run(make_manifest(output, run="other", seed=1, **opts))
    c = load_file(str(output / "runs/other/heads.safetensors"))
    assert not torch.equal(a["audio.0.weight"], c["audio.0.weight"])


def test_split_is_stable_and_seeded():
    keys = [f"k{i}" for i in range(2000)]
    val = is_val(keys, seed=0, fraction=0.2)
    assert 0.17 < val.mean() < 0.23
    assert (is_val(keys[:500], seed=0, fraction=0.2) == val[:500]).all()  # more data, same side
    assert (is_val(keys, seed=1, fraction=0.2) != val).any()


@pytest.mark.parametrize("bad", [{"train.anchor": "video"}, {"train.modalities": ["image"]},
                                 {"train.warm_start": "nowhere"}, {"train.warm_start": "default"},
                                 {"train.init": "ridge", "train.depth": 3},
                                 {"train.refit": True, "train.early_stop_fraction": 0.0},
                                 {"train.bridge": "somewhere", "train.refit": True},
                                 {"train.init": "ridge", "train.in_memory": "stream"}])
def test_bad_train_config_names_the_key(planted, bad):
    from pipeline.core.manifest import ManifestError

    output, _ = planted
    key = next(iter(bad))
    manifest = make_manifest(output, **{k.split(".")[1]: v for k, v in bad.items()})
    with pytest.raises(ManifestError, match=key.replace(".", r"\.")):
        train.run(manifest)


def test_early_stopping_exports_the_best_epoch_of_a_training_side_slice(planted):
    """The slice is carved from the training rows (never the held-out ones); the exported heads are the
    best epoch's: re-scoring the slice with them gives the curve's maximum."""
    import torch

    from pipeline.core.heads_file import load_heads
    from trainer.data.rows import load
    from trainer.early_stop import carve, reciprocal_ranks

    output, _ = planted
    manifest = make_manifest(output, epochs=8, val_fraction=0.25, early_stop_fraction=0.2, patience=3)
    summary = train.run(manifest)
    stop = summary["early_stopping"]
    assert stop["epoch_chosen"] == 1 + int(np.argmax(stop["curve"])) and len(stop["curve"]) <= 8
    assert (output / "runs/default/validation_curve.png").read_bytes()[:4] == b"\x89PNG"
    data = load(manifest.train, manifest.layout)
    fit, slice_ = carve(data, 0.2, 0)
    assert stop["slice_rows"] == slice_.rows == len(data.train_idx) - len(fit) > 30
    assert not set(fit) & set(data.val_idx) and len(fit) == summary["train_rows"]
    heads, _ = load_heads(manifest.layout.run("default").root)
    values, weights = [], []
    best = stop["epoch_chosen"] - stop["first_epoch"]
    for m, (a, p) in slice_.pairs.items():
        anchor = torch.nn.functional.normalize(data.vectors["text"][a].float(), dim=-1)
        proj = torch.nn.functional.normalize(heads[m](data.vectors[m][p].float()), dim=-1)
        to_text, from_text = float(reciprocal_ranks(proj, anchor).mean()), float(reciprocal_ranks(anchor, proj).mean())
        assert stop["curve_by_direction"][f"{m}->text"][best] == pytest.approx(to_text, abs=1e-5)
        assert stop["curve_by_direction"][f"text->{m}"][best] == pytest.approx(from_text, abs=1e-5)
        values.append(0.5 * (to_text + from_text))
        weights.append(len(a))  # every truth pair counts once
    assert all(len(v) == len(stop["curve"]) for v in stop["curve_by_direction"].values())
    assert sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights) == pytest.approx(
        max(stop["curve"]), abs=1e-5)


def test_new_round_with_new_pairs_does_not_resume_the_old_one(tmp_path):
    """Round 1 (captions) then round 2 (captions + quintuples) under the same run name: round 2
    must train from scratch, not resume the finished round 1. (Captions 0..99 have no sound of their
    own, so their auto-paired sounds are kept as rows.)"""
    from tests.planted import write_planted_stores
    from tests.trainer.conftest import DIMS, write_quintuples

    output = tmp_path
    write_planted_stores(output, n=400, dims=DIMS, noise=0.1, seed=0, drop={"audio": list(range(100))})
    first = train.run(make_manifest(output, epochs=1))
    write_quintuples(output, [f"s{i:05d}" for i in range(100)], {"audio": [f"s{i + 100:05d}" for i in range(100)]})
    second = train.run(make_manifest(output, epochs=1))
    assert second["rows"] == first["rows"] + 100
    assert first["resumed_from_step"] == 0 and second["resumed_from_step"] == 0
    again = train.run(make_manifest(output, epochs=1))  # same config and data: the finished run is resumed
    assert again["resumed_from_step"] == again["steps"] == second["steps"]


def reencode(output, modality: str, dim: int, digest: str, seed: int = 1) -> None:
    """Replace a store with another encoder's vectors for the same keys (same part names)."""
    from pipeline.core.store import embeddings_dir, list_parts, read_part, write_embeddings

    for part in list_parts(embeddings_dir(output, modality)):
        keys = list(read_part(part).keys)
        vectors = np.random.default_rng(seed).standard_normal((len(keys), dim))
        write_embeddings(part, keys, vectors, dtype="float32",
                         metadata={"encoder": f"other-{modality}", "digest": digest, "dim": dim, "modality": modality})


def test_re_encoded_store_starts_a_fresh_run(planted):
    """Same keys, same run name, same config: a store re-encoded by another encoder (same dim) or
    with another dim must not resume the old checkpoint (nor fail loading heads of another shape)."""
    output, _ = planted
    first = train.run(make_manifest(output, epochs=1))
    assert train.run(make_manifest(output, epochs=1))["resumed_from_step"] == first["steps"]  # unchanged: resumed
    reencode(output, "audio", 24, digest="aaaa")  # another encoder, same dim
    assert train.run(make_manifest(output, epochs=1))["resumed_from_step"] == 0
    reencode(output, "audio", 24, digest="bbbb")  # same files' names and dim, another digest
    assert train.run(make_manifest(output, epochs=1))["resumed_from_step"] == 0
    reencode(output, "audio", 20, digest="bbbb")  # another dim: no "size mismatch" on load_state
    again = train.run(make_manifest(output, epochs=1))
    assert again["resumed_from_step"] == 0 and again["steps"] == first["steps"]


def test_checkpoint_is_marked_complete_only_after_every_rank_saved(planted, monkeypatch):
    """save_state, then wait_for_everyone, and only then the main process writes the state file that
    marks the checkpoint complete (and deletes the older one): a rank still writing its part must
    not leave a 'complete' checkpoint behind."""
    from accelerate import Accelerator

    output, _ = planted
    events: list[tuple[str, bool]] = []
    saved: list[Path] = []
    save, wait = Accelerator.save_state, Accelerator.wait_for_everyone

    def save_state(self, path, *args, **kwargs):
        out = save(self, path, *args, **kwargs)
        saved.append(Path(path))
        events.append(("save", (Path(path) / train.STATE_FILE).exists()))
        return out

    def wait_for_everyone(self):
        events.append(("wait", bool(saved) and (saved[-1] / train.STATE_FILE).exists()))
        return wait(self)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    monkeypatch.setattr(Accelerator, "wait_for_everyone", wait_for_everyone)
    train.run(make_manifest(output, epochs=2, checkpoint_every=3))
    assert len(saved) >= 2
    for i, (name, _) in enumerate(events):
        if name == "save":  # the next barrier comes before the state file exists
            assert events[i + 1] == ("wait", False), events
    ckpts = list((output / "runs/default/checkpoints").glob("step_*"))
    assert [p.name for p in ckpts] == [saved[-1].name] and (ckpts[0] / train.STATE_FILE).is_file()


def cli_manifest(output: Path) -> Path:
    """The conftest manifest as a TOML file, for the CLI."""
    mods = "".join(f'[modalities.{m}]\nencoder = "planted-{m}"\n' for m in DIMS)
    path = output / "m.toml"
    path.write_text(f'[dataset]\nname = "planted"\nshards = "unused-{{0..1}}.tar"\noutput = "{output}"\n{mods}'
                    '[train]\nhidden = 64\nepochs = 1\nbatch_size = 64\n')
    return path


@pytest.mark.parametrize("command, override", [("train", "train.out_dim=5"), ("train", "train.val_fraction=0.9999"),
                                               ("eval", "eval.run=nope")])
def test_bad_config_values_exit_2_naming_the_key(planted, capsys, command, override):
    """Config errors found while training or evaluating are ManifestErrors: the CLI prints the key and
    exits 2 instead of a traceback (heads.py ValueError, IndexError with no training rows,
    FileNotFoundError of a run without heads)."""
    from pipeline.cli import main

    output, _ = planted
    assert main([command, str(cli_manifest(output)), "--set", override]) == 2
    assert f"bindery {command}: error: {override.split('=')[0]}" in capsys.readouterr().err


DDP_SCRIPT = r'''
import json, os, sys
from pathlib import Path
from tests.trainer.conftest import make_manifest
from trainer import train
out = Path(sys.argv[1])
summary = train.run(make_manifest(out, **json.loads(sys.argv[2])))
if int(os.environ["RANK"]) == 0:
    (out / "summary.json").write_text(json.dumps(summary))
'''


def two_ranks(output: Path, tmp_path: Path, **train_opts) -> dict:
    """``train.run`` under torchrun on 2 CPU ranks with these [train] keys; rank 0's summary."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    proc = torchrun([str(script), str(output), json.dumps(train_opts)], timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return json.loads((output / "summary.json").read_text())


def assert_heads_close(output: Path, run_a: str, run_b: str, atol: float) -> None:
    a = load_file(str(output / f"runs/{run_a}/heads.safetensors"))
    b = load_file(str(output / f"runs/{run_b}/heads.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol), (k, (a[k] - b[k]).abs().max())


def test_two_process_training_matches_one_process_with_the_global_batch(planted, tmp_path):
    """torchrun, 2 CPU ranks x 64 rows with the loss over gathered features == 1 rank x 128 rows:
    same loss per step; DDP averages the ranks' local-slice gradients (half the full gradient),
    which AdamW's normalisation cancels up to its eps, so the heads agree closely."""
    output, _ = planted
    summary = two_ranks(output, tmp_path, epochs=2, batch_size=64, run="ddp")
    assert summary["world_size"] == 2 and summary["steps"] == 2 * math.ceil(summary["train_rows"] / 128)
    single = train.run(make_manifest(output, epochs=2, batch_size=128, run="single"))
    assert single["world_size"] == 1 and single["steps"] == summary["steps"]
    assert single["final_loss"] == pytest.approx(summary["final_loss"], rel=1e-3)
    assert_heads_close(output, "ddp", "single", atol=1e-3)


def test_two_process_ridge_start_and_refit_match_one_process(planted, tmp_path):
    """The ridge start, the epoch-0 score, early stopping, the regression term and the refit under torchrun
    (2 CPU ranks x 64 rows) choose the same epochs as 1 rank x 128 rows and export heads that agree closely
    (the regression term is weighted like InfoNCE under DDP's gradient averaging)."""
    output, _ = planted
    opts = {"epochs": 3, "init": "ridge", "refit": True, "val_fraction": 0.25, "early_stop_fraction": 0.2,
            "dropout": 0.0, "regression_weight": 1.0, "start_margin_se": 0.0}
    ddp = two_ranks(output, tmp_path, batch_size=64, run="ddp-refit", **opts)
    single = train.run(make_manifest(output, batch_size=128, run="single-refit", **opts))
    assert ddp["world_size"] == 2 and ddp["refit"]["epochs"] == single["refit"]["epochs"]
    assert ddp["early_stopping"]["curve"][0] == pytest.approx(single["early_stopping"]["curve"][0], abs=1e-6)
    assert_heads_close(output, "ddp-refit", "single-refit", atol=2e-3)


@pytest.mark.parametrize("override", ["train.queue_size=-1", "train.partial_weight=0", "train.hard_negatives=-2"])
def test_negative_train_values_are_manifest_errors(planted, override):
    from pipeline.core.manifest import ManifestError

    output, _ = planted
    key, value = override.split("=")
    with pytest.raises(ManifestError, match=key.replace(".", r"\.")):
        make_manifest(output, **{key.split(".")[1]: float(value) if "weight" in key else int(value)})


@pytest.mark.gpu
def test_gpu_training_keeps_stores_on_the_gpu_in_bf16(planted):
    output, _ = planted
    manifest = make_manifest(output, epochs=12, val_fraction=0.25, precision="bf16", in_memory="gpu")
    assert load_checked(manifest, "cuda").device.type == "cuda"
    train.run(manifest)
    metrics = evaluate.run(manifest)
    assert metrics["text->audio"]["R@1"] >= 0.8 and metrics["audio->points"]["R@10"] >= 0.6


def _ridge_heads(data, m: str, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """The ridge formula on the fitted rows: [W; b] = (X1^T X1 + lam diag(1..1, 0))^-1 X1^T T."""
    rows = data.rows
    sel = data.train_idx[rows.partner[m][data.train_idx] >= 0]
    x = data.vectors[m][rows.partner[m][sel]].double().numpy()
    t = data.vectors["text"][rows.anchor[sel]].double().numpy()
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    x1 = np.hstack([x, np.ones((len(x), 1))])
    wb = np.linalg.solve(x1.T @ x1 + lam * np.diag([1.0] * x.shape[1] + [0.0]), x1.T @ t)
    return wb[:-1], wb[-1]


@pytest.mark.parametrize("lr", [1e-9, 5.0])
def test_ridge_init_starts_at_the_ridge_map_and_keeps_it_when_training_hurts(planted, lr):
    """init = ridge: the heads start as the ridge map of the fitted rows (the slice left out), scored as
    epoch 0. lr 1e-9 barely moves them; lr 5.0 wrecks them, so epoch 0 is kept: either way the
    exported heads are the ridge map."""
    from pipeline.core.heads_file import load_heads
    from trainer.data.rows import load
    from trainer.early_stop import carve

    output, _ = planted
    manifest = make_manifest(output, epochs=3, val_fraction=0.25, early_stop_fraction=0.2, patience=5,
                             init="ridge", lr=lr, dropout=0.0)
    summary = train.run(manifest)
    stop, init = summary["early_stopping"], summary["init"]
    assert init["kind"] == "ridge" and set(init["ridge_lambda"]) == {"audio", "points"}
    assert stop["first_epoch"] == 0 and len(stop["curve"]) == 4
    if lr > 1:
        assert stop["epoch_chosen"] == 0 and max(stop["curve"][1:]) < stop["curve"][0]
    data = load(manifest.train, manifest.layout)
    fit, _ = carve(data, 0.2, 0)
    data.train_idx = fit
    heads, _ = load_heads(manifest.layout.run("default").root)
    x = np.random.default_rng(0).normal(size=(20, DIMS["audio"]))
    for m in ("audio", "points"):
        w, b = _ridge_heads(data, m, init["ridge_lambda"][m])
        xm = x[:, :DIMS[m]]
        out = heads[m](torch.tensor(xm, dtype=torch.float32)).double().numpy()
        np.testing.assert_allclose(out, xm @ w + b, rtol=1e-3, atol=1e-3 * np.abs(xm @ w + b).max())


def test_a_warm_start_from_heads_of_another_shape_names_the_key(planted):
    from pipeline.core.manifest import ManifestError

    output, _ = planted
    train.run(make_manifest(output, epochs=1, run="narrow", hidden=32))
    with pytest.raises(ManifestError, match=r"train\.warm_start: .*'narrow'.*train\.hidden"):
        train.run(make_manifest(output, epochs=1, run="wide", warm_start="narrow", hidden=64))


def test_warm_start_begins_at_the_named_runs_heads(planted):
    from pipeline.core.heads_file import load_heads

    output, _ = planted
    first = make_manifest(output, epochs=2, run="round1", dropout=0.1)
    train.run(first)
    summary = train.run(make_manifest(output, epochs=1, run="round2", warm_start="round1", lr=1e-9, dropout=0.1))
    assert summary["init"] == {"kind": "warm_start", "source": "round1"}
    assert summary["early_stopping"]["first_epoch"] == 0
    a, config_a = load_heads(output / "runs/round1")
    b, config_b = load_heads(output / "runs/round2")
    for m in a:
        for pa_, pb in zip(a[m].parameters(), b[m].parameters(), strict=True):
            torch.testing.assert_close(pa_, pb, rtol=1e-5, atol=1e-6)
    assert config_b["logit_scale"] == pytest.approx(config_a["logit_scale"], rel=1e-4)


def test_rerunning_an_early_stopped_run_keeps_its_best_epoch(planted):
    """A finished run with early stopping, trained again with the same config and data, resumes the
    ended run: no step is trained and the exported heads are still the best epoch's, not the last's."""
    output, _ = planted
    manifest = make_manifest(output, epochs=6, val_fraction=0.25, early_stop_fraction=0.2, patience=2, lr=3e-2)
    first = train.run(manifest)
    before = load_file(str(output / "runs/default/heads.safetensors"))
    again = train.run(manifest)
    after = load_file(str(output / "runs/default/heads.safetensors"))
    assert again["resumed_from_step"] == again["steps"] == first["steps"]
    assert again["early_stopping"]["curve"] == first["early_stopping"]["curve"]
    assert again["early_stopping"]["epoch_chosen"] == first["early_stopping"]["epoch_chosen"]
    for k in before:
        assert torch.equal(before[k], after[k]), k


def test_refit_keeping_the_start_exports_the_ridge_baseline(planted):
    """refit = true with a ridge start that training only wrecks (lr 5.0): early stopping keeps epoch 0,
    the refit on every training row (the slice too) is the ridge map of all training rows, which is the
    eval baseline's map: the formula here, and the same held-out R@1 as the baseline."""
    from pipeline.core.heads_file import load_heads
    from trainer.data.rows import load

    output, _ = planted
    manifest = make_manifest(output, epochs=3, val_fraction=0.25, early_stop_fraction=0.2, patience=5,
                             init="ridge", refit=True, lr=5.0, dropout=0.0)
    summary = train.run(manifest)
    assert summary["early_stopping"]["epoch_chosen"] == 0
    refit = summary["refit"]
    assert refit["epochs"] == 0 and refit["train_rows"] == summary["train_rows"] + summary["early_stopping"]["slice_rows"]
    data = load(manifest.train, manifest.layout)
    assert refit["train_rows"] == len(data.train_idx)
    heads, _ = load_heads(manifest.layout.run("default").root)
    x = np.random.default_rng(1).normal(size=(20, DIMS["audio"]))
    for m in ("audio", "points"):
        w, b = _ridge_heads(data, m, refit["init"]["ridge_lambda"][m])
        xm = x[:, :DIMS[m]]
        out = heads[m](torch.tensor(xm, dtype=torch.float32)).double().numpy()
        np.testing.assert_allclose(out, xm @ w + b, rtol=1e-3, atol=1e-3 * np.abs(xm @ w + b).max())
    metrics = evaluate.run(manifest)
    for pair in ("text->audio", "audio->text", "text->points", "points->text"):
        assert metrics[pair]["R@1"] == pytest.approx(metrics["baselines"]["ridge"][pair]["R@1"], abs=1.5 / metrics[pair]["n"])


def test_refit_trains_every_row_for_the_kept_epochs_and_reruns_to_the_same_heads(planted):
    output, _ = planted
    manifest = make_manifest(output, epochs=5, val_fraction=0.25, early_stop_fraction=0.2, patience=5, refit=True)
    first = train.run(manifest)
    assert first["refit"]["epochs"] == first["early_stopping"]["epoch_chosen"] >= 1
    before = load_file(str(output / "runs/default/heads.safetensors"))
    again = train.run(manifest)  # the ended run resumes, and the seeded refit gives the same heads
    assert again["resumed_from_step"] == first["steps"] and again["refit"]["epochs"] == first["refit"]["epochs"]
    after = load_file(str(output / "runs/default/heads.safetensors"))
    for k in before:
        assert torch.equal(before[k], after[k]), k
    no_refit = make_manifest(output, run="fit-only", epochs=5, val_fraction=0.25, early_stop_fraction=0.2, patience=5)
    train.run(no_refit)
    other = load_file(str(output / "runs/fit-only/heads.safetensors"))
    assert not torch.equal(other["audio.0.weight"], before["audio.0.weight"])  # the refit changed the heads


def test_a_warm_start_from_a_refitted_run_starts_from_its_first_fit(planted):
    """The refit's heads were trained on the early-stopping slice, which a warm-started run scores its start
    on; so the first fit (slice never trained on) is kept beside them and is what a warm start begins at."""
    from pipeline.core.heads_file import load_heads

    output, _ = planted
    opts = {"val_fraction": 0.25, "early_stop_fraction": 0.2, "patience": 5}
    train.run(make_manifest(output, run="round1", epochs=3, refit=True, **opts))
    fit, _ = load_heads(output / "runs/round1/first-fit")
    final, _ = load_heads(output / "runs/round1")
    assert not torch.equal(fit["audio"][0].weight, final["audio"][0].weight)
    train.run(make_manifest(output, run="round2", epochs=1, warm_start="round1", lr=1e-9, **opts))
    second, _ = load_heads(output / "runs/round2")
    torch.testing.assert_close(second["audio"][0].weight, fit["audio"][0].weight, rtol=1e-5, atol=1e-6)
    train.run(make_manifest(output, run="round1", epochs=2, **opts))  # retrained without refit: no stale first fit
    assert not (output / "runs/round1/first-fit").exists()


def test_a_run_resumed_at_an_epochs_end_scores_that_epoch_first(planted):
    """A checkpoint saved on an epoch's last step (here by stop_after_steps) comes before that epoch is
    scored; the resumed run scores it first, so its curve, chosen epoch and heads equal an uninterrupted run's."""
    output, _ = planted
    opts = {"epochs": 5, "val_fraction": 0.25, "early_stop_fraction": 0.2, "patience": 5, "init": "ridge",
            "dropout": 0.0}
    straight = train.run(make_manifest(output, run="straight", **opts))
    per_epoch = math.ceil(straight["train_rows"] / 64)
    stopped = train.run(make_manifest(output, run="resumed", **opts), stop_after_steps=2 * per_epoch)
    assert stopped["stopped_at"] == 2 * per_epoch
    resumed = train.run(make_manifest(output, run="resumed", **opts))
    assert resumed["resumed_from_step"] == 2 * per_epoch
    assert resumed["early_stopping"]["curve"] == straight["early_stopping"]["curve"]
    assert resumed["early_stopping"]["epoch_chosen"] == straight["early_stopping"]["epoch_chosen"]
    a = load_file(str(output / "runs/straight/heads.safetensors"))
    b = load_file(str(output / "runs/resumed/heads.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_checkpoint_with_early_stopping_state_of_an_older_format_is_not_resumed(planted):
    """An older bindery's checkpoint (same [train] section, early-stopping state without this format) trains
    afresh instead of failing on the keys it lacks."""
    output, _ = planted
    opts = {"epochs": 3, "val_fraction": 0.25, "early_stop_fraction": 0.2, "init": "ridge"}
    train.run(make_manifest(output, run="old", **opts), stop_after_steps=3)
    (best_file,) = (output / "runs/old/checkpoints").glob("step_*/best_epoch.pt")
    state = torch.load(best_file, weights_only=True)
    torch.save({k: v for k, v in state.items() if k not in ("format", "best_pairs", "start_pairs")}, best_file)
    again = train.run(make_manifest(output, run="old", **opts))
    assert again["resumed_from_step"] == 0 and again["early_stopping"]["epoch_chosen"] is not None


def test_a_warm_started_run_retrains_when_its_source_was_retrained(planted):
    output, _ = planted
    train.run(make_manifest(output, run="source", epochs=2))
    first = train.run(make_manifest(output, run="follower", epochs=1, warm_start="source"))
    assert train.run(make_manifest(output, run="follower", epochs=1, warm_start="source"))["resumed_from_step"] == first["steps"]
    train.run(make_manifest(output, run="source", epochs=3))  # the source changes
    again = train.run(make_manifest(output, run="follower", epochs=1, warm_start="source"))
    assert again["resumed_from_step"] == 0


def test_checkpoints_at_epoch_ends_are_saved_once_after_scoring(planted, monkeypatch):
    """checkpoint_every = one epoch: each epoch's checkpoint is written once, by the end-of-epoch step, when
    that epoch's score is already in the saved curve (the last one marked ended)."""
    output, _ = planted
    opts = {"val_fraction": 0.25, "early_stop_fraction": 0.2, "patience": 5}
    probe = train.run(make_manifest(output, run="probe", epochs=1, **opts))
    per_epoch = probe["steps"]
    saved: list[tuple[int, int, bool]] = []
    real = train.save_checkpoint

    def spy(tr, step, finished=False):
        saved.append((step, len(tr.best.curve), finished))
        real(tr, step, finished)

    monkeypatch.setattr(train, "save_checkpoint", spy)
    train.run(make_manifest(output, run="every-epoch", epochs=3, checkpoint_every=per_epoch, **opts))
    assert saved == [(per_epoch, 1, False), (2 * per_epoch, 2, False), (3 * per_epoch, 3, True)]
