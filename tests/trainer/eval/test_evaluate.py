"""Zero-shot and EShot on planted stores whose labels follow the text vectors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.core.heads_file import load_heads
from pipeline.core.samples import sample_labels
from pipeline.core.split import is_val
from pipeline.core.store import atomic_write_table, embeddings_dir, read_part, read_store, write_embeddings
from tests.planted import unit, write_planted_stores
from tests.trainer.conftest import DIMS, make_manifest
from trainer import train
from trainer.eval import evaluate
from trainer.eval.retrieval import ranks_of_truth
from trainer.model.export import export
from trainer.model.heads import Binder

CLASSES = ["cat", "dog", "owl", "cow", "bee", "elk", "fox", "yak"]  # 8: top-5 can miss


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """400 planted items; item i's class is the centre nearest its text vector (8 classes, chance 12.5 %).
    The class names' text vectors are those centres; one item has no json, one has broken json."""
    out = tmp_path_factory.mktemp("labelled")
    vectors = write_planted_stores(out, n=400, dims=DIMS)
    centres = unit(np.random.default_rng(7).standard_normal((len(CLASSES), DIMS["text"])))
    sims = vectors["text"] @ centres.T
    label = sims.argmax(1)
    top2 = np.sort(sims, 1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.1  # items near a class boundary get no label (about half)
    keys = [f"s{i:05d}" for i in range(400)]
    docs = [json.dumps({"label": CLASSES[c], "source": "planted"} if ok else {"source": "planted"})
            for c, ok in zip(label, clear, strict=True)]
    docs[0], docs[1] = "", "{not json"
    atomic_write_table(pa.table({"key": keys, "json": docs}), out / "metadata" / "part-000000.parquet")
    write_embeddings(out / "classes" / "text.parquet", CLASSES, centres, dtype="float32",
                     metadata={"encoder": "planted-text", "modality": "text"})
    # every training row for 12 epochs, as the floors below were measured (early stopping: test_train.py)
    manifest = make_manifest(out, epochs=12, val_fraction=0.3, early_stop_fraction=0.0)
    train.run(manifest)
    return manifest, evaluate.run(manifest), label, clear


def test_labels_are_read_from_metadata(labelled):
    manifest, _, label, clear = labelled
    labels = sample_labels(manifest.layout, "label")
    assert len(labels) == clear[2:].sum() and "s00000" not in labels and "s00001" not in labels
    i = 2 + int(np.flatnonzero(clear[2:])[0])
    assert labels[f"s{i:05d}"] == CLASSES[label[i]]


def numpy_zero_shot(manifest, modality: str, labels: dict[str, str]) -> tuple[float, float, int, float]:
    """(top-1, top-5, n, majority rate) of ``modality``'s labelled held-out items against the class
    names its training-side items carry, with the exported head applied by hand in NumPy (Linear,
    ReLU, Linear, L2-normalise), the items centred on the training side's mean mapped vector and the
    class names on the training side's mean (unit) text vector."""
    heads, _ = load_heads(manifest.layout.run(manifest.train.run).root)
    w = {k: v.numpy().astype(np.float64) for k, v in heads[modality].state_dict().items()}
    store = read_store(manifest.output, modality)
    x = store.vectors.astype(np.float64)
    mapped = unit(np.maximum(x @ w["0.weight"].T + w["0.bias"], 0) @ w["2.weight"].T + w["2.bias"])
    classes = read_part(manifest.layout.classes)
    val = is_val(store.keys, manifest.train.seed, manifest.train.val_fraction)
    train_labels = [labels[k] for k in store.keys[~val] if k in labels]
    names = sorted(set(train_labels))
    cvec = unit(classes.vectors.astype(np.float64))[[list(classes.keys).index(n) for n in names]]
    text = read_store(manifest.output, "text")
    text_train = unit(text.vectors.astype(np.float64))[~is_val(text.keys, manifest.train.seed,
                                                                manifest.train.val_fraction)]
    idx = [i for i in np.flatnonzero(val) if labels.get(store.keys[i]) in names]
    sims = unit(mapped[idx] - mapped[~val].mean(0)) @ unit(cvec - text_train.mean(0)).T
    truth = np.array([names.index(labels[store.keys[i]]) for i in idx])
    ranks = (sims > sims[np.arange(len(idx)), truth][:, None]).sum(1)
    majority = max(set(train_labels), key=train_labels.count)
    return float((ranks < 1).mean()), float((ranks < 5).mean()), len(idx), float(np.mean(truth == names.index(majority)))


def test_zero_shot_and_eshot_after_training(labelled):
    """The heads rank partners well (R@1 test in test_train.py) but align them only loosely, and a
    label here hangs on which of 8 random centres is nearest: measured audio zero-shot top-1
    0.53-0.57, top-5 0.95-0.98, points 0.29-0.45, EShot 0.16-0.29 (planted seeds 0-2; chance 0.125).
    Floors: audio zero-shot >= 0.4; EShot above 0.2 (seed 0: 0.27-0.29). Top-5 of 8 classes can miss,
    so it is checked against the same classification done here in NumPy."""
    manifest, metrics, _, clear = labelled
    zs, es = metrics["zero_shot"], metrics["eshot"]
    assert set(zs) == {"audio", "points"} and set(es) == {"audio:points", "points:audio"}
    assert zs["audio"]["classes"] == 8 and 30 < zs["audio"]["n"] < 80
    assert zs["audio"]["top1"] >= 0.4
    labels = sample_labels(manifest.layout, "label")
    for m in ("audio", "points"):
        top1, top5, n, majority = numpy_zero_shot(manifest, m, labels)
        assert zs[m]["n"] == n and zs[m]["top1"] == pytest.approx(top1, abs=1e-6), m
        assert zs[m]["top5"] == pytest.approx(top5, abs=1e-6), m
        assert zs[m]["majority"] == pytest.approx(majority) and zs[m]["chance"] == 1 / zs[m]["classes"]
        assert zs[m]["top1"] > zs[m]["majority"], m
    assert es["audio:points"]["top1"] > 0.2 and es["points:audio"]["top1"] > 0.2


def identity_run(manifest, dim: int) -> None:
    """Export heads that are exactly the identity (ReLU(x) - ReLU(-x) = x) for audio and points."""
    binder = Binder({"text": dim, "audio": dim, "points": dim}, "text", ["audio", "points"], hidden=2 * dim)
    eye = torch.eye(dim)
    with torch.no_grad():
        for m in ("audio", "points"):
            head = binder.heads[m]
            head[0].weight.copy_(torch.cat([eye, -eye])), head[0].bias.zero_()
            head[2].weight.copy_(torch.cat([eye, -eye], 1)), head[2].bias.zero_()
    export(manifest.output / "runs" / "identity", binder, {"manifest": manifest.to_dict()})


def test_zero_shot_and_eshot_match_a_reference_with_perfect_heads(tmp_path):
    """audio and points stores are copies of text and the heads are the identity, so zero-shot
    must equal classifying the text itself (top-1 = 1.0), and EShot must equal a nearest
    class-mean classifier computed here with numpy."""
    dims = {"text": 16, "audio": 16, "points": 16}
    vectors = write_planted_stores(tmp_path, n=300, dims=dims, noise=0.0)
    text = vectors["text"]
    for m in ("audio", "points"):  # overwrite with exact copies of text
        for p in embeddings_dir(tmp_path, m).glob("*.parquet"):
            p.unlink()
        write_embeddings(embeddings_dir(tmp_path, m) / "part-000000.parquet", [f"s{i:05d}" for i in range(300)],
                         text, dtype="float32", metadata={"modality": m})
    centres = unit(np.random.default_rng(3).standard_normal((5, 16)))
    label = (text @ centres.T).argmax(1)
    atomic_write_table(pa.table({"key": [f"s{i:05d}" for i in range(300)],
                                 "json": [json.dumps({"cls": CLASSES[c]}) for c in label]}),
                       tmp_path / "metadata" / "part-000000.parquet")
    write_embeddings(tmp_path / "classes" / "text.parquet", CLASSES[:5], centres, dtype="float32")
    manifest = make_manifest(tmp_path, run="identity", val_fraction=0.3)
    manifest = dataclasses.replace(manifest, eval=dataclasses.replace(manifest.eval, label_key="cls"))
    identity_run(manifest, 16)
    metrics = evaluate.run(manifest)
    assert metrics["text->audio"]["R@1"] == 1.0 and metrics["audio->points"]["R@1"] == 1.0
    val = is_val([f"s{i:05d}" for i in range(300)], 0, 0.3)
    # zero-shot classifies the (centred) text itself: both sides centred on the training-side text mean
    mu = text[~val].mean(0)
    zs_want = float(((unit(text[val] - mu) @ unit(centres - mu).T).argmax(1) == label[val]).mean())
    assert zs_want > 0.9
    for m in ("audio", "points"):
        assert metrics["zero_shot"][m]["top1"] == pytest.approx(zs_want, abs=1e-6)
    protos = unit(np.stack([text[~val & (label == c)].mean(0) for c in range(5)]))
    want = float(((text[val] @ protos.T).argmax(1) == label[val]).mean())
    assert metrics["eshot"]["audio:points"]["top1"] == pytest.approx(want, abs=1e-6)
    assert metrics["eshot"]["audio:points"]["n"] == int(val.sum())


def test_unknown_eval_run_is_a_manifest_error(tmp_path):
    from pipeline.core.manifest import ManifestError

    write_planted_stores(tmp_path, n=40, dims=DIMS)
    manifest = make_manifest(tmp_path)
    for run, key in (("nope", r"eval\.run: run 'nope'"), ("", r"eval\.run \(empty, so train\.run\): run 'default'")):
        m = dataclasses.replace(manifest, eval=dataclasses.replace(manifest.eval, run=run))
        with pytest.raises(ManifestError, match=key):
            evaluate.run(m)


def test_metrics_file_is_replaced_atomically(tmp_path, monkeypatch):
    """A crash while metrics.json is written leaves the previous file whole (and no temporary file)."""
    dims = {"text": 16, "audio": 16, "points": 16}
    write_planted_stores(tmp_path, n=60, dims=dims)
    manifest = make_manifest(tmp_path, run="identity")
    identity_run(manifest, 16)
    metrics = tmp_path / "runs" / "identity" / "metrics.json"
    metrics.write_text('{"old": true}')

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        evaluate.run(manifest)
    assert json.loads(metrics.read_text()) == {"old": True}
    assert sorted(p.name for p in metrics.parent.iterdir()) == ["config.json", "heads.safetensors", "metrics.json"]
    monkeypatch.undo()
    fresh = evaluate.run(manifest)  # and without the crash it is replaced
    assert json.loads(metrics.read_text()) == fresh and "text->audio" in fresh


def test_metrics_file_format(labelled):
    manifest, metrics, _, _ = labelled
    on_disk = json.loads((manifest.output / "runs/default/metrics.json").read_text())
    assert on_disk == metrics
    pairs = [k for k in on_disk if "->" in k]
    assert len(pairs) == 6 and set(on_disk["text->audio"]) == {"R@1", "R@5", "R@10", "n"}


def test_ranks_of_truth_counts_better_items():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    g = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.8, 0.6]])
    assert ranks_of_truth(q, g, torch.tensor([2, 1])).tolist() == [1, 0]  # 0.9 beats 0.8


def test_passthrough_with_another_dim_is_a_manifest_error(tmp_path):
    from pipeline.core.manifest import ManifestError

    write_planted_stores(tmp_path, n=40, dims={"text": 16, "audio": 8, "points": 8})
    manifest = make_manifest(tmp_path, modalities=["points"], anchor_passthrough=["audio"], epochs=1)
    train.run(manifest)
    with pytest.raises(ManifestError, match="train.anchor_passthrough"):
        evaluate.run(manifest)
