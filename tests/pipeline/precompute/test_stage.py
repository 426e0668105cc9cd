"""The precompute stage end to end on tiny shards and tiny hf: encoders (CPU)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.core.manifest import load
from pipeline.core.store import embeddings_dir, list_parts, read_metadata, read_status, read_store
from pipeline.encoders.registry import build_encoder
from pipeline.precompute.stage import run
from tests.conftest import MODS, write_manifest
from tests.launch import torchrun

ROOT = Path(__file__).resolve().parents[3]
DIMS = {"image": 16, "text": 16, "video": 16, "audio": 24, "points": 16}


def snapshot(output: Path) -> dict[str, dict[str, np.ndarray]]:
    """{modality: {key: vector}} of a whole store; fails on duplicate keys."""
    out = {}
    for m in MODS:
        store = read_store(output, m)
        assert len(set(store.keys)) == len(store.keys), f"duplicate keys in {m}"
        out[m] = {k: np.asarray(v, np.float32) for k, v in zip(store.keys, store.vectors, strict=True)}
    return out


def assert_same_stores(a: Path, b: Path) -> None:
    sa, sb = snapshot(a), snapshot(b)
    for m in MODS:
        assert sorted(sa[m]) == sorted(sb[m]), m
        for k in sa[m]:
            np.testing.assert_allclose(sa[m][k], sb[m][k], atol=2e-3, err_msg=f"{m} {k}")
        sta = sorted(tuple(r.values()) for r in read_status(a, m).to_pylist())
        stb = sorted(tuple(r.values()) for r in read_status(b, m).to_pylist())
        assert sta == stb, m


def cli_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_clip, tiny_audio, tiny_shards):
    """One uninterrupted in-process run with 2 DataLoader workers."""
    d = tmp_path_factory.mktemp("ref")
    manifest = load(write_manifest(d / "m.toml", tiny_shards["pattern"], d / "out", tiny_clip, tiny_audio))
    from dataclasses import replace
    manifest = replace(manifest, precompute=replace(manifest.precompute, num_workers=2))
    summary = run(manifest)
    return {"dir": d, "output": d / "out", "summary": summary, "manifest": manifest}


def test_every_sample_is_in_exactly_one_table(reference, tiny_shards):
    out = reference["output"]
    for m in MODS:
        got = {k: "ok" for k in read_store(out, m).keys}
        for row in read_status(out, m).to_pylist():
            assert row["key"] not in got, f"{m}: {row['key']} in both tables"
            got[row["key"]] = row["status"]
        assert got == tiny_shards["expected"][m], m


def test_precompute_json_counts(reference, tiny_shards):
    summary = json.loads((reference["output"] / "precompute.json").read_text())
    assert summary["world_size"] == 1
    for m in MODS:
        exp = {s: 0 for s in ("ok", "missing", "corrupt", "error", "duplicate")}
        for status in tiny_shards["expected"][m].values():
            exp[status] += 1
        assert summary["counts"][m] == exp, m
        assert summary["this_run"][m] == exp, m
    assert summary["counts"]["points"] == {"ok": 11, "missing": 1, "corrupt": 2, "error": 1, "duplicate": 0}
    assert set(summary["faults"]) == {"shard-000002"}
    assert "unexpected end of data" in summary["faults"]["shard-000002"]
    (rank,) = summary["ranks"]
    assert sorted(rank["shards"]) == [f"shard-00000{i}" for i in range(4)]
    assert rank["parts_written"] == 4 * len(MODS)
    # the main loop's intervals are disjoint and inside the loop, itself inside the wall time
    assert rank["wait_s"] + rank["encode_s"] + rank["write_s"] <= rank["loop_s"] <= rank["wall_s"] <= summary["wall_s"]
    assert rank["read_s"] <= 2 * rank["loop_s"]  # two DataLoader workers, busy only while the loop runs
    assert sorted(rank["encode_s_by_modality"]) == sorted(MODS)
    assert sum(rank["encode_s_by_modality"].values()) == pytest.approx(rank["encode_s"])
    for key in ("read_s", "wait_s", "encode_s", "write_s"):
        assert summary[key] == rank[key]  # one rank: the sums are its own figures
    # 7 + 5 + 2 complete samples (shard 2's third is cut by the fault, shard 3 is empty), each in one table
    assert rank["samples_read"] == 14
    for m in MODS:
        assert sum(rank["counts"][m].values()) == rank["samples_read"] + 1, m  # + the partly read sample
    assert summary["items_per_s"] == pytest.approx(sum(c["ok"] for c in summary["this_run"].values())
                                                   / summary["wall_s"])


def test_embeddings_are_unit_norm_with_provenance(reference):
    out = reference["output"]
    for m in MODS:
        parts = list_parts(embeddings_dir(out, m))
        assert [p.name for p in parts] == [f"part-shard-00000{i}.parquet" for i in range(4)]
        store = read_store(out, m)
        assert store.vectors.shape[1] == DIMS[m]
        v = store.vectors.astype(np.float32)
        assert np.isfinite(v).all()
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=2e-3)
        meta = read_metadata(parts[0])
        assert meta["dim"] == DIMS[m] and meta["normalized"] is True and meta["modality"] == m
        assert meta["dtype"] == ("float32" if m == "audio" else "float16")
        assert str(store.vectors.dtype) == meta["dtype"]
        assert meta["encoder"].startswith("hf:") and meta["digest"].startswith("sha256:")
        assert meta["preprocessing"]["batch_size"] > 0
    assert read_metadata(list_parts(embeddings_dir(out, "video"))[0])["preprocessing"]["frames"] == 3
    assert read_metadata(list_parts(embeddings_dir(out, "points"))[0])["preprocessing"]["views"] == 2
    assert read_metadata(list_parts(embeddings_dir(out, "audio"))[0])["preprocessing"]["sample_rate"] == 16000
    # empty shard -> empty parts, not absent ones
    assert pq.read_metadata(embeddings_dir(out, "image") / "part-shard-000003.parquet").num_rows == 0


def test_vectors_match_the_encoder(reference, tiny_shards):
    """A stored image vector is the encoder's normalised output on the decoded sample."""
    from pipeline.ingest.decode import decode_member
    from pipeline.ingest.shards import iter_samples

    manifest = reference["manifest"]
    enc = build_encoder("image", manifest.modalities["image"])
    sample = next(iter_samples(tiny_shards["pattern"].replace("{000000..000003}", "000000")))
    import torch

    with torch.no_grad():
        feat = enc.features([decode_member(sample, "image", manifest.modalities["image"])])[0]
    want = (feat / feat.norm()).numpy()
    store = read_store(reference["output"], "image")
    got = store.vectors[list(store.keys).index(sample["__key__"])].astype(np.float32)
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_metadata_and_class_names(reference, tiny_shards):
    import polars as pl

    out = reference["output"]
    meta = pl.scan_parquet(str(out / "metadata" / "*.parquet")).collect()
    keys = set(meta["key"].to_list())
    assert keys == set(tiny_shards["expected"]["image"])
    row = meta.filter(pl.col("key") == "s0-000").row(0, named=True)
    assert json.loads(row["json"])["label"] == "cat"
    assert meta.filter(pl.col("key") == "s0-006")["json"].to_list() == [""]
    table = pq.read_table(out / "classes" / "text.parquet")
    assert table.column("key").to_pylist() == tiny_shards["labels"]
    cmeta = read_metadata(out / "classes" / "text.parquet")
    assert cmeta["class_prompt"] == "a photo of the {}" and cmeta["modality"] == "text"
    enc = build_encoder("text", reference["manifest"].modalities["text"])
    import torch

    with torch.no_grad():
        feats = enc.features([f"a photo of the {n}" for n in tiny_shards["labels"]])
    want = (feats / feats.norm(dim=1, keepdim=True)).numpy()
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_stores_scan_with_polars(reference):
    import polars as pl

    out = reference["output"]
    for m in MODS:
        df = pl.scan_parquet(str(embeddings_dir(out, m) / "*.parquet")).collect()
        assert df.columns == ["key", "embedding"] and df.height == len(read_store(out, m))
        st = pl.scan_parquet(str(out / "status" / m / "*.parquet")).collect()
        assert st.columns == ["key", "status", "error"]


def test_rerun_redoes_only_missing_parts(reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference["output"], out)
    from dataclasses import replace

    manifest = replace(reference["manifest"], dataset=replace(reference["manifest"].dataset, output=str(out)))
    summary = run(manifest)
    assert summary["ranks"][0]["parts_written"] == 0 and summary["ranks"][0]["shards"] == []
    (out / "embeddings" / "audio" / "part-shard-000001.parquet").unlink()
    summary = run(manifest)
    assert summary["ranks"][0]["parts_written"] == 1
    assert summary["this_run"]["audio"] == {"ok": 4, "missing": 0, "corrupt": 1, "error": 0, "duplicate": 0}
    assert summary["this_run"]["image"]["ok"] == 0
    assert_same_stores(reference["output"], out)


BLOCK_MARKER, BLOCK_AFTER, BLOCK_CLIP = "BINDERY_TEST_BLOCK_MARKER", "BINDERY_TEST_BLOCK_AFTER", "BINDERY_TEST_CLIP"


def blocking_text(modality, config):
    """A plugin: the tiny CLIP text tower (``$BINDERY_TEST_CLIP``) that, after ``$BINDERY_TEST_BLOCK_AFTER``
    batches, touches ``$BINDERY_TEST_BLOCK_MARKER`` and blocks until it is killed. Once the marker
    exists it is the plain tower, so a rerun finishes with the same vectors."""
    import threading
    from dataclasses import replace

    encoder = build_encoder(modality, replace(config, encoder=f"hf:{os.environ[BLOCK_CLIP]}"))
    marker, after = Path(os.environ[BLOCK_MARKER]), int(os.environ[BLOCK_AFTER])
    if marker.exists():
        return encoder
    forward, calls = encoder.encode, [0]

    def encode(batch):
        calls[0] += 1
        if calls[0] > after:
            marker.touch()
            threading.Event().wait()  # until SIGKILL
        return forward(batch)

    encoder.encode = encode
    return encoder


def test_sigkill_then_rerun_gives_the_same_stores(reference, tiny_shards, tiny_clip, tiny_audio, tmp_path):
    m = write_manifest(tmp_path / "m.toml", tiny_shards["pattern"], tmp_path / "out", tiny_clip, tiny_audio,
                       "trust_code = true")
    text = f'[modalities.text]\nencoder = "hf:{tiny_clip}"'
    assert text in m.read_text()
    m.write_text(m.read_text().replace(text, '[modalities.text]\nencoder = '
                                             '"tests.pipeline.precompute.test_stage:blocking_text"'))
    marker = tmp_path / "blocked"
    # one process, in order: shard 0's two text batches (4 + 2 captions) and its parts, then it
    # blocks on shard 1's first text batch, with shard 1's parts unwritten
    env = dict(cli_env(), **{BLOCK_MARKER: str(marker), BLOCK_AFTER: "2", BLOCK_CLIP: str(tiny_clip)})
    cmd = [sys.executable, "-m", "pipeline.cli", "precompute", str(m)]
    log = tmp_path / "first.log"
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + 120
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert marker.exists(), f"the run never reached its third text batch: {log.read_text()[-2000:]}"
    first = tmp_path / "out" / "metadata" / "part-shard-000000.parquet"  # a shard's last write
    assert first.exists(), "the first run wrote nothing before it was killed"
    done = list_parts(embeddings_dir(tmp_path / "out", "image"))
    assert len(done) < 4, "the run finished before the kill; the test would prove nothing"
    assert [p.name for p in done] == ["part-shard-000000.parquet"]
    assert not (tmp_path / "out" / "precompute.json").exists()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "precompute.json").read_text())
    assert "shard-000000" not in summary["ranks"][0]["shards"]  # finished parts are not redone
    assert_same_stores(reference["output"], tmp_path / "out")


def test_torchrun_two_processes_match_one(reference, tiny_shards, tiny_clip, tiny_audio, tmp_path):
    m = write_manifest(tmp_path / "m.toml", tiny_shards["pattern"], tmp_path / "out", tiny_clip, tiny_audio)
    res = torchrun(["-m", "pipeline.cli", "precompute", str(m)], timeout=180, cwd=tmp_path, env=cli_env())
    assert res.returncode == 0, res.stdout[-3000:]
    summary = json.loads((tmp_path / "out" / "precompute.json").read_text())
    assert summary["world_size"] == 2
    ranks = summary["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert sorted(ranks[0]["shards"]) == ["shard-000000", "shard-000002"]
    assert sorted(ranks[1]["shards"]) == ["shard-000001", "shard-000003"]
    assert summary["counts"] == reference["summary"]["counts"]
    assert_same_stores(reference["output"], tmp_path / "out")


@pytest.mark.gpu
def test_cuda_bf16_matches_cpu(reference, tmp_path):
    import torch

    assert torch.cuda.is_available(), "a gpu-marked test: run it where torch sees a CUDA GPU (just test-gpu)"
    from dataclasses import replace

    man = reference["manifest"]
    man = replace(man, dataset=replace(man.dataset, output=str(tmp_path / "out")),
                  precompute=replace(man.precompute, device="cuda", precision="bf16"))
    summary = run(man)
    assert summary["counts"] == reference["summary"]["counts"]
    gpu, cpu = snapshot(tmp_path / "out"), snapshot(reference["output"])
    for m in MODS:
        meta = read_metadata(list_parts(embeddings_dir(tmp_path / "out", m))[0])
        assert meta["precision"] == "bf16" and meta["device"] == "cuda"
        for k, v in cpu[m].items():
            assert float(np.dot(gpu[m][k], v)) > 0.98, (m, k)


def test_handler_raise_stops_at_the_first_bad_sample(tiny_shards, tiny_clip, tiny_audio, tmp_path):
    from pipeline.ingest.decode import DecodeError

    one = tiny_shards["pattern"].replace("{000000..000003}", "000001")
    manifest = load(write_manifest(tmp_path / "m.toml", one, tmp_path / "out", tiny_clip, tiny_audio,
                                   'handler = "raise"'))
    with pytest.raises(DecodeError, match="image"):
        run(manifest)
    assert list_parts(embeddings_dir(tmp_path / "out", "image")) == []


class FlakyText:
    """A plugin text encoder: NaN for captions with 'dog', an exception for batches with 'bird'."""

    modality, name, dim, sample_rate = "text", "flaky", 4, None

    def preprocessor(self):
        return flaky_batch

    def encode(self, batch):
        import torch

        if (batch["bird"] > 0).any():
            raise RuntimeError("bird batch")
        out = torch.ones(len(batch["dog"]), 4)
        out[batch["dog"] > 0] = float("nan")
        return out

    def modules(self):
        return []

    def to(self, device):
        return self

    def digest(self):
        return "sha256:none"

    def provenance(self):
        return {}


def flaky_batch(texts):
    import torch

    return {"dog": torch.tensor([float("dog" in t) for t in texts]),
            "bird": torch.tensor([float("bird" in t) for t in texts])}


def flaky(modality, config):
    return FlakyText()


class FixedRateAudio(FlakyText):
    """A plugin audio encoder that takes 44.1 kHz audio, like the built-in aisfx."""

    modality, name, sample_rate = "audio", "fixed-rate", 44_100


def fixed_rate(modality, config):
    return FixedRateAudio()


def test_encoder_failures_and_non_finite_vectors_are_error_rows(tiny_shards, tmp_path):
    one = tiny_shards["pattern"].replace("{000000..000003}", "000000")
    (tmp_path / "m.toml").write_text(f"""
[dataset]
name = "flaky"
shards = "{one}"
output = "{tmp_path / 'out'}"
[modalities.text]
encoder = "tests.pipeline.precompute.test_stage:flaky"
batch_size = 1
[precompute]
device = "cpu"
num_workers = 0
trust_code = true
""")
    summary = run(load(tmp_path / "m.toml"))
    assert summary["counts"]["text"] == {"ok": 3, "missing": 1, "corrupt": 0, "error": 3, "duplicate": 0}
    rows = {r["key"]: r["error"] for r in read_status(tmp_path / "out", "text").to_pylist()}
    assert "non-finite" in rows["s0-001"] and "RuntimeError: bird batch" in rows["s0-002"]
    assert sorted(read_store(tmp_path / "out", "text").keys) == ["s0-000", "s0-003", "s0-005"]
    assert "bird batch" in summary["classes_error"] and not (tmp_path / "out" / "classes").exists()


def text_manifest(tmp_path: Path, shards: str, encoder: str, extra: str = "") -> Path:
    """A text-only manifest (the fastest modality) writing to ``tmp_path / "out"``."""
    path = tmp_path / "text.toml"
    path.write_text(f"""
[dataset]
name = "t"
shards = "{shards}"
output = "{tmp_path / 'out'}"
[modalities.text]
encoder = "{encoder}"
[precompute]
device = "cpu"
num_workers = 0
trust_code = true
{extra}
""")
    return path


def test_unreadable_shard_gets_no_parts_and_is_retried(tiny_shards, tiny_clip, tmp_path):
    one = tiny_shards["pattern"].replace("{000000..000003}", "000000")
    late = tmp_path / "late-000004.tar"
    manifest = load(text_manifest(tmp_path, f"{one}::{late}", f"hf:{tiny_clip}"))
    summary = run(manifest)
    assert "cannot open" in summary["faults"]["late-000004"]
    assert "cannot open" in json.loads((tmp_path / "out" / "precompute.json").read_text())["faults"]["late-000004"]
    assert [p.name for p in list_parts(embeddings_dir(tmp_path / "out", "text"))] == ["part-shard-000000.parquet"]
    assert not (tmp_path / "out" / "metadata" / "part-late-000004.parquet").exists()
    shutil.copy(one.replace("000000", "000001"), late)  # the shard comes back
    summary = run(manifest)
    assert summary["ranks"][0]["shards"] == ["late-000004"] and summary["faults"] == {}
    assert summary["this_run"]["text"]["ok"] == 5
    assert {k for k in read_store(tmp_path / "out", "text").keys if k.startswith("s1-")} == {f"s1-00{i}" for i in range(5)}


def test_truncated_shard_fault_persists_across_reruns(tiny_shards, tiny_clip, tmp_path):
    cut = tiny_shards["pattern"].replace("{000000..000003}", "000002")
    manifest = load(text_manifest(tmp_path, cut, f"hf:{tiny_clip}"))
    first = run(manifest)
    assert "shard-000002" in first["faults"] and first["this_run"]["text"] == {"ok": 2, "missing": 0, "corrupt": 0,
                                                                                "error": 1, "duplicate": 0}
    again = run(manifest)
    assert again["ranks"][0]["shards"] == [] and again["faults"] == first["faults"]
    in_process = first["ranks"][0]  # num_workers = 0: the reading runs inside the loop's waits
    assert in_process["read_s"] <= in_process["wait_s"] <= in_process["loop_s"]
    assert json.loads((tmp_path / "out" / "precompute.json").read_text())["faults"] == first["faults"]


def test_a_changed_encoder_is_not_mixed_into_the_store(tiny_shards, tiny_clip, tmp_path):
    from pipeline.core.manifest import ManifestError

    one = tiny_shards["pattern"].replace("{000000..000003}", "000000")
    two = tiny_shards["pattern"].replace("{000000..000003}", "{000000..000001}")
    run(load(text_manifest(tmp_path, one, f"hf:{tiny_clip}")))
    with pytest.raises(ManifestError, match=r"^modalities\.text\.encoder: .*dataset\.output.*embeddings/text"):
        run(load(text_manifest(tmp_path, two, "tests.pipeline.precompute.test_stage:flaky")))
    assert [p.name for p in list_parts(embeddings_dir(tmp_path / "out", "text"))] == ["part-shard-000000.parquet"]
    run(load(text_manifest(tmp_path, two, f"hf:{tiny_clip}")))  # the same encoder resumes
    assert len(list_parts(embeddings_dir(tmp_path / "out", "text"))) == 2


def test_a_sample_rate_the_encoder_does_not_take_is_an_error(tiny_shards, tmp_path):
    from pipeline.encoders.base import EncoderError

    one = tiny_shards["pattern"].replace("{000000..000003}", "000000")
    path = text_manifest(tmp_path, one, "tests.pipeline.precompute.test_stage:flaky")
    path.write_text(path.read_text().replace("[modalities.text]", "[modalities.audio]\nencoder = "
                                             "\"tests.pipeline.precompute.test_stage:fixed_rate\"\n"
                                             "sample_rate = 16000\n[modalities.text]"))
    with pytest.raises(EncoderError, match=r"^modalities\.audio\.sample_rate: fixed-rate takes 44100 Hz"):
        run(load(path))


def test_cuda_device_without_cuda_is_a_manifest_error(tiny_shards, tmp_path, monkeypatch):
    import torch

    from pipeline.core.manifest import ManifestError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    one = tiny_shards["pattern"].replace("{000000..000003}", "000000")
    manifest = load(text_manifest(tmp_path, one, "tests.pipeline.precompute.test_stage:flaky"), ["precompute.device=cuda"])
    with pytest.raises(ManifestError, match=r"^precompute\.device: 'cuda'"):
        run(manifest)
