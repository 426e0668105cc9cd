"""The calibrated acceptance of auto-pairs on mixed data: half the captions have no true partner."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.split import is_val
from pipeline.pair import stage as pair
from pipeline.pair.accept import Neighbours, Truth, calibrate
from tests.pipeline.pair.test_stage import make_manifest, read, write_store

N, OWN = 400, 200  # captions s00000..s00399; only the first 200 have their own sound


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def mixed(tmp_path):
    """32-d captions; a sound for each of the first 200 (caption + noise of norm ~0.7) and 200 sounds of
    another source (random), so captions 200..399 have only wrong partners to choose from."""
    rng = np.random.default_rng(5)
    text = unit(rng.normal(size=(N, 32)))
    own = unit(text[:OWN] + 0.7 * unit(rng.normal(size=(OWN, 32))))
    other = unit(rng.normal(size=(200, 32)))
    keys = [f"s{i:05d}" for i in range(N)]
    write_store(tmp_path, "text", keys, text)
    write_store(tmp_path, "audio", keys[:OWN] + [f"x{i:05d}" for i in range(200)], np.concatenate([own, other]))
    return tmp_path, text, np.concatenate([own, other])


def test_threshold_is_the_quantile_of_training_side_impostors(mixed):
    out, text, audio = mixed
    summary = pair.run(make_manifest(out, k=5, accept_quantile=0.9))
    acc = summary["modalities"]["audio"]["acceptance"]
    held = is_val([f"s{i:05d}" for i in range(N)], 0, 0.1)  # the manifest's [train] split (no head run)
    sims = text @ audio.T
    known = np.flatnonzero(~held[:OWN])
    impostor = [np.max(np.delete(sims[i], i)) for i in known]  # best wrong sound of each truth-known caption
    assert acc["threshold"] == pytest.approx(np.quantile(impostor, 0.9), abs=1e-5)
    assert acc["calibrated_on"] == len(known)
    true = sims[known, known]
    assert acc["true_pairs_passing"] == pytest.approx(np.mean(true >= np.quantile(impostor, 0.9)), abs=1e-6)

    quint = read(out, "quintuples.parquet")
    chosen = np.array([r["audio_key"] is not None for r in quint])
    assert acc["acceptance_rate"] == pytest.approx(chosen.mean())
    # captions without a sound: their best (wrong) sound is distributed like an impostor, so ~10 % pass
    assert chosen[OWN:].mean() < 0.2
    right = [r["audio_key"] == r["query_key"] for r, h in zip(quint[:OWN], held[:OWN], strict=True)
             if h and r["audio_key"] is not None]
    assert acc["precision_held_out"] == pytest.approx(np.mean(right)) and np.mean(right) >= 0.9
    assert acc["truth_known_held_out"] == int(held[:OWN].sum())


def test_quantile_zero_accepts_every_neighbour(mixed):
    out, _, _ = mixed
    summary = pair.run(make_manifest(out, k=5, accept_quantile=0.0))
    acc = summary["modalities"]["audio"]["acceptance"]
    assert acc["threshold"] is None and acc["acceptance_rate"] == 1.0
    assert all(r["audio_key"] is not None for r in read(out, "quintuples.parquet"))


def test_no_truth_known_pair_means_no_threshold():
    """No query has its own item: nothing to calibrate on, every neighbour passes."""
    nb = Neighbours(np.array([0, 0, 1]), np.array([1, 0, 0]), np.array([0.9, 0.5, 0.4], np.float32))
    cal = calibrate(nb, Truth(np.array([-1, -1]), np.array([False, False])), np.full(2, np.nan), 0.95)
    assert cal.threshold is None and cal.calibrated_on == 0 and cal.min_score(-1.0) == -1.0


def test_held_out_queries_never_calibrate():
    """Only training-side truth-known queries count: moving query 1 to the held-out side changes the threshold."""
    nb = Neighbours(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0]), np.array([0.9, 0.3, 0.8, 0.6], np.float32))
    own, true = np.array([0, 1]), np.array([0.9, 0.8])
    both = calibrate(nb, Truth(own, np.array([False, False])), true, 0.5)
    one = calibrate(nb, Truth(own, np.array([False, True])), true, 0.5)
    assert both.threshold == pytest.approx(np.quantile([0.3, 0.6], 0.5)) and one.threshold == pytest.approx(0.3)
    assert one.calibrated_on == 1 and one.true_pass_rate == 1.0
