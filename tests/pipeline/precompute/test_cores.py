"""The split of CPU cores between DataLoader workers and encoder threads, from measured costs."""

from __future__ import annotations

import itertools

import pytest
import torch

from pipeline.precompute import cores
from pipeline.precompute.cores import best_split, choose_split


def brute_force(n_cores: int, shards: int, decode: float, encode: float) -> int:
    """Every split simulated as a pipeline of two stages over 1,000 samples: the fastest one."""
    def seconds(w: int) -> float:
        if w == 0:  # one process: decode then encode on every core, in turn
            return 1000 * (decode + encode / n_cores)
        return 1000 * max(decode / w, encode / (n_cores - w))  # the slower stage sets the pace
    return min(range(0, min(n_cores - 1, shards) + 1), key=lambda w: (seconds(w), w))


def test_issue_17_small_images_on_two_cores_keep_every_core_for_the_encoder():
    # clip-retrieval's side-by-side: ~4 ms of decode against ~124 ms of 1-thread encoder per image
    workers, rate = best_split(2, 4, 0.004, 0.124)
    assert workers == 0
    assert rate == pytest.approx(1 / (0.004 + 0.124 / 2))


def test_heavy_decode_gets_workers_and_the_shard_count_caps_them():
    assert best_split(16, 100, 0.050, 0.010) == (13, pytest.approx(13 / 0.050))  # 13/.05=260 < 3/.01=300
    assert best_split(16, 3, 0.050, 0.010)[0] == 3  # a fourth worker would have no shard


@pytest.mark.parametrize("n_cores,shards,decode,encode",
                         list(itertools.product((2, 4, 16), (1, 64), (0.001, 0.02, 0.3), (0.005, 0.1))))
def test_the_choice_is_the_fastest_simulated_split(n_cores, shards, decode, encode):
    assert best_split(n_cores, shards, decode, encode)[0] == brute_force(n_cores, shards, decode, encode)


def test_settings_that_are_kept_as_given(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cores.os, "cpu_count", lambda: 8)

    def never():
        raise AssertionError("no calibration when the split is given")

    assert choose_split(3, 1, torch.device("cpu"), 10, never).to_json() == {
        "workers": 3, "threads": 5, "cores": 8, "rule": "num_workers", "decode_ms": None, "encode_ms": None,
        "predicted_per_s": None}
    assert choose_split(0, 2, torch.device("cpu"), 10, never).threads == 4  # 8 cores over 2 ranks
    gpu = choose_split(-1, 1, torch.device("cuda", 0), 10, never)
    assert (gpu.workers, gpu.rule) == (7, "gpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_split(-1, 1, torch.device("cpu"), 10, never).rule == "OMP_NUM_THREADS"


def test_calibrated_split_records_the_costs(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cores.os, "cpu_count", lambda: 4)
    split = choose_split(-1, 1, torch.device("cpu"), 10, lambda: (0.030, 0.010))
    assert split.rule == "calibrated" and split.decode_ms == 30.0 and split.encode_ms == 10.0
    assert (split.workers, split.threads) == (3, 1) and split.predicted_per_s == pytest.approx(100.0)


def test_measured_costs_are_cpu_seconds_per_sample():
    calls = []

    class Plan:
        def preprocess(self, items):
            return {"x": torch.ones(len(items))}

    def decode(sample, modality, plan):
        return None if sample["bad"] else sample

    def encoder(batch):
        calls.append(len(batch["x"]))
        sum(range(200_000))  # some CPU time
        return batch

    samples = [{"bad": i == 0} for i in range(5)]
    decode_s, encode_s = cores.measure_costs(samples, {"image": Plan()}, {"image": encoder}, decode)
    assert calls == [4, 4]  # a warm-up call, then the timed one, over the 4 decodable samples
    assert decode_s >= 0 and encode_s > 0


def test_precompute_json_records_the_calibrated_split(tiny_shards, tiny_clip, tmp_path, monkeypatch):
    from pipeline.core.manifest import load
    from pipeline.precompute.stage import run

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cores.os, "cpu_count", lambda: 2)
    path = tmp_path / "m.toml"
    path.write_text(f"""
[dataset]
name = "t"
shards = "{tiny_shards['pattern']}"
output = "{tmp_path / 'out'}"
[modalities.image]
encoder = "hf:{tiny_clip}"
[precompute]
device = "cpu"
""")
    threads = torch.get_num_threads()
    try:
        split = run(load(path))["ranks"][0]["cores"]
    finally:
        torch.set_num_threads(threads)
    assert split["rule"] == "calibrated" and split["cores"] == 2 and split["decode_ms"] > 0 and split["encode_ms"] > 0
    expected, _ = best_split(2, 4, split["decode_ms"] / 1000, split["encode_ms"] / 1000)
    assert split["workers"] == expected and split["threads"] == (2 - expected if expected else 2)
