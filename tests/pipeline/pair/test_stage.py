"""`bindery pair` end to end on planted and hand-built stores: quality, filters, resume, spaces, errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.core.heads_file import plain_head, save_heads
from pipeline.core.layout import part_name
from pipeline.core.manifest import ManifestError, from_dict
from pipeline.core.store import embeddings_dir, write_embeddings
from pipeline.pair import search as pair_search
from pipeline.pair import stage as pair
from pipeline.pair.filters import capped_choice
from tests.planted import write_planted_stores


def make_manifest(output, **pair_keys):
    return from_dict({"dataset": {"name": "t", "shards": "x.tar", "output": str(output)},
                      "modalities": {"text": {"encoder": "x"}}, "pair": pair_keys})


def write_store(output, modality, keys, vectors, parts=1):
    """Hand-built stores all declare one space (metadata), as two towers of one encoder would."""
    for p, idx in enumerate(np.array_split(np.arange(len(keys)), parts)):
        write_embeddings(embeddings_dir(output, modality) / part_name(f"{p:06d}"), [keys[i] for i in idx],
                         np.asarray(vectors)[idx], dtype="float32", metadata={"modality": modality, "space": "hand"})


def angles(degrees):
    rad = np.deg2rad(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], 1).astype(np.float32)


def read(output, name):
    return pq.read_table(output / "pairs" / name).to_pylist()


# ----------------------------------------------------------------------------- quality and outputs

SHARED = {"text": 32, "image": 32, "video": 32}


def test_planted_pairs_are_found_and_outputs_follow_the_contract(tmp_path):
    # image/video are the text vectors plus noise of norm 0.5, so a true pair's cosine is ~1/sqrt(1.25) = 0.89
    # while 400 random 32-d distractors reach at most ~sqrt(2 ln 400 / 32) = 0.61 (plus a little noise):
    # a margin of ~0.28 is ~5 standard deviations of the distractor score, so P@1 must be ~1; allow 1%.
    write_planted_stores(tmp_path, n=400, dims=SHARED, noise=0.5, drop={"video": list(range(10))})
    # accept_quantile 0: every raw neighbour is kept (the acceptance rule is tested in test_accept.py)
    summary = pair.run(make_manifest(tmp_path, k=5, query_chunk=150, accept_quantile=0.0))
    quint = read(tmp_path, "quintuples.parquet")
    assert len(quint) == 400 and [r["query_key"] for r in quint] == [f"s{i:05d}" for i in range(400)]
    for m in ("image", "video"):
        hits = np.mean([r[f"{m}_key"] == r["query_key"] for r in quint[10:]])
        assert hits >= 0.99, (m, hits)
    assert all(r["video_key"] != r["query_key"] for r in quint[:10])  # dropped items cannot be found
    assert summary["engines"] == {"image": "faiss-flat", "video": "faiss-flat"} and summary["chunks"] == 3
    assert summary["modalities"]["video"]["targets"] == 390
    assert 0.8 < summary["modalities"]["image"]["chosen_score"]["p50"] < 0.95

    neighbors = pq.read_table(tmp_path / "pairs" / "neighbors.parquet")
    assert neighbors.schema.names == ["query_key", "modality", "rank", "target_key", "score"]
    assert str(neighbors.schema.field("rank").type) == "int32" and neighbors.num_rows == 2 * 400 * 5
    first = [r for r in neighbors.to_pylist() if r["query_key"] == "s00042" and r["modality"] == "image"]
    assert [r["rank"] for r in first] == [0, 1, 2, 3, 4] and first[0]["target_key"] == "s00042"
    assert all(a["score"] >= b["score"] for a, b in zip(first, first[1:], strict=False))

    import faiss

    index = faiss.read_index(str(tmp_path / "pairs" / "index" / "video.faiss"))
    keys = pq.read_table(tmp_path / "pairs" / "index" / "video.keys.parquet").column("key").to_pylist()
    assert index.ntotal == len(keys) == 390 and keys[0] == "s00010"
    assert (tmp_path / "pairs" / "scores_image.png").read_bytes()[:4] == b"\x89PNG"
    on_disk = json.loads((tmp_path / "pairs" / "summary.json").read_text())
    assert on_disk["queries"] == 400 and on_disk["params"]["k"] == 5


@pytest.mark.parametrize("engine", ["torch", "faiss-ivf"])
def test_other_engines_find_the_planted_pairs(tmp_path, engine):
    write_planted_stores(tmp_path, n=400, dims={"text": 32, "image": 32}, noise=0.5)
    summary = pair.run(make_manifest(tmp_path, k=3, engine=engine, nprobe=4))
    quint = read(tmp_path, "quintuples.parquet")
    # same margin as above; IVF with 4 of 8 lists may miss a copy whose list is not probed
    assert np.mean([r["image_key"] == r["query_key"] for r in quint]) >= (0.99 if engine == "torch" else 0.9)
    assert summary["engines"] == {"image": engine}


# ----------------------------------------------------------------------------- filters


def hand_built(tmp_path):
    """Queries at 10, 20, 30 degrees; targets A at 0 and B at 90 degrees (2-d)."""
    write_store(tmp_path, "text", ["q0", "q1", "q2"], angles([10, 20, 30]))
    write_store(tmp_path, "image", ["A", "B"], angles([0, 90]))


def chosen(tmp_path):
    return [r["image_key"] for r in read(tmp_path, "quintuples.parquet")]


def test_max_uses_caps_how_many_queries_take_one_target(tmp_path):
    hand_built(tmp_path)
    pair.run(make_manifest(tmp_path, k=2))
    assert chosen(tmp_path) == ["A", "A", "A"]
    # greedy by score: q0-A (cos 10) fills A; q2-B (cos 60) beats q1-B (cos 70) for B; q1 has nothing left
    summary = pair.run(make_manifest(tmp_path, k=2, max_uses=1))
    assert chosen(tmp_path) == ["A", None, "B"]
    assert summary["modalities"]["image"]["unpaired_queries"] == 1
    assert read(tmp_path, "quintuples.parquet")[1]["image_score"] is None
    pair.run(make_manifest(tmp_path, k=2, max_uses=2))
    assert chosen(tmp_path) == ["A", "A", "B"]


def test_mutual_keeps_only_pairs_found_in_both_directions(tmp_path):
    hand_built(tmp_path)
    pair.run(make_manifest(tmp_path, k=1, mutual=True))
    assert chosen(tmp_path) == ["A", None, None]  # A's nearest query is q0 only
    pair.run(make_manifest(tmp_path, k=2, mutual=True))
    # A's top-2 queries: q0, q1; B's top-2: q2, q1. q2-A is not mutual, q2-B is.
    assert chosen(tmp_path) == ["A", "A", "B"]
    kept = {(r["query_key"], r["target_key"]) for r in read(tmp_path, "neighbors.parquet")}
    assert kept == {("q0", "A"), ("q1", "A"), ("q1", "B"), ("q2", "B")}


def test_min_score_drops_weak_neighbours(tmp_path):
    hand_built(tmp_path)
    pair.run(make_manifest(tmp_path, k=2, min_score=0.95))
    assert chosen(tmp_path) == ["A", None, None]  # cos 10 = 0.985; cos 20 = 0.940


def test_capped_choice_equals_greedy_by_score():
    rng = np.random.default_rng(3)
    nq, nt, k, cap = 300, 40, 6, 4
    rows = [(q, t, s) for q in range(nq) for t, s in
            zip(rng.choice(nt, k, replace=False), np.sort(rng.random(k))[::-1], strict=True)]
    q, t, s = (np.array(c) for c in zip(*rows, strict=True))
    got = capped_choice(q, t, s, nq, cap)
    expect, uses = np.full(nq, -1), np.zeros(nt, int)
    for row in np.argsort(-s, kind="stable"):
        if expect[q[row]] < 0 and uses[t[row]] < cap:
            expect[q[row]], uses[t[row]] = row, uses[t[row]] + 1
    np.testing.assert_array_equal(got, expect)
    assert np.bincount(t[got[got >= 0]]).max() == cap and (got < 0).sum() > 0


# ----------------------------------------------------------------------------- resume


def test_crash_after_a_chunk_then_rerun_gives_the_same_output(tmp_path, monkeypatch):
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    for out in (clean, crashed):
        write_planted_stores(out, n=300, dims=SHARED, noise=0.5)
    pair.run(make_manifest(clean, k=4, query_chunk=70, max_uses=3))

    real_write, calls = pair_search._write_chunk, []

    def crash_after_two(path, table):
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        calls.append(path)
        real_write(path, table)

    monkeypatch.setattr(pair_search, "_write_chunk", crash_after_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pair.run(make_manifest(crashed, k=4, query_chunk=70, max_uses=3))
    assert len(list((crashed / "pairs" / "chunks").glob("chunk-*.parquet"))) == 2
    assert not (crashed / "pairs" / "quintuples.parquet").exists()
    monkeypatch.setattr(pair_search, "_write_chunk", real_write)
    summary = pair.run(make_manifest(crashed, k=4, query_chunk=70, max_uses=3))
    assert summary["chunks"] == 5 and summary["chunks_reused"] == 2
    for name in ("neighbors.parquet", "quintuples.parquet"):
        assert read(crashed, name) == read(clean, name)
    # a changed k invalidates the old chunks instead of mixing them in
    summary = pair.run(make_manifest(crashed, k=2, query_chunk=70, accept_quantile=0.0))
    assert summary["chunks_reused"] == 0 and len(read(crashed, "neighbors.parquet")) == 300 * 2 * 2


# ----------------------------------------------------------------------------- spaces and errors


def test_dim_mismatch_without_head_fails_naming_the_fix(tmp_path):
    write_planted_stores(tmp_path, n=50)  # text 32, image 32, audio 24, points 16
    with pytest.raises(ManifestError, match=r"pair.targets: the audio store \(dim 24\).*pair.head_run"):
        pair.run(make_manifest(tmp_path))


def test_bad_configurations_fail_clearly(tmp_path, monkeypatch):
    write_planted_stores(tmp_path, n=50, dims={"text": 32, "image": 32})
    with pytest.raises(ManifestError, match="pair.targets: no embedding store for 'audio'"):
        pair.run(make_manifest(tmp_path, targets=["audio"]))
    with pytest.raises(ManifestError, match="pair.targets: 'sound' is not a modality"):
        make_manifest(tmp_path, targets=["sound"])
    with pytest.raises(ManifestError, match="pair.query: no embedding store for 'video'"):
        pair.run(make_manifest(tmp_path, query="video"))
    with pytest.raises(ManifestError, match="pair.head_run: no exported heads at .*runs/nope"):
        pair.run(make_manifest(tmp_path, head_run="nope"))
    with pytest.raises(ManifestError, match="pair.engine: 'annoy' is not allowed"):
        make_manifest(tmp_path, engine="annoy")
    monkeypatch.setattr(pair.knn, "cuda_available", lambda: False)  # a machine without CUDA, on any machine
    with pytest.raises(ManifestError, match="pair.device: 'cuda' but this machine has no CUDA device"):
        pair.run(make_manifest(tmp_path, device="cuda"))


@pytest.mark.gpu
def test_cuda_device_pairs_with_the_torch_engine_on_the_gpu(tmp_path):
    # the same planted margin as above (P@1 ~1); on CUDA, auto picks the fp16 torch engine
    write_planted_stores(tmp_path, n=400, dims={"text": 32, "image": 32}, noise=0.5)
    summary = pair.run(make_manifest(tmp_path, k=3, device="cuda", save_index=False))
    assert summary["device"] == "cuda" and summary["engines"] == {"image": "torch"}
    quint = read(tmp_path, "quintuples.parquet")
    assert np.mean([r["image_key"] == r["query_key"] for r in quint]) >= 0.99


def test_head_run_maps_a_mismatched_store_into_the_query_space(tmp_path):
    rng = np.random.default_rng(4)
    n = 300
    text = rng.standard_normal((n, 32)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    mix = rng.standard_normal((32, 48)).astype(np.float32)  # audio = text @ mix (+ noise), dim 48
    audio = text @ mix + 0.05 * rng.standard_normal((n, 48)).astype(np.float32)
    keys = [f"k{i:04d}" for i in range(n)]
    write_store(tmp_path, "text", keys, text, parts=2)
    write_store(tmp_path, "audio", list(reversed(keys)), audio[::-1])  # store order differs from the query's
    with pytest.raises(ManifestError, match="audio store \\(dim 48\\)"):
        pair.run(make_manifest(tmp_path))
    head = plain_head([[48, 32]])  # the least-squares inverse of the mix: maps audio back onto text
    with torch.no_grad():
        head[0].weight.copy_(torch.from_numpy(np.linalg.pinv(mix).T.copy()))
        head[0].bias.zero_()
    save_heads(tmp_path / "runs" / "boot", {"audio": head}, {"run": "boot"}, space="text")
    summary = pair.run(make_manifest(tmp_path, head_run="boot", k=3))
    assert summary["space"]["audio"] == {"space": "text", "projected": True, "dim": 32}
    quint = read(tmp_path, "quintuples.parquet")
    # noise 0.05 per dim on a ~5.7-norm signal survives the inverse map as ~2 % error: every pair is found
    assert np.mean([r["audio_key"] == r["query_key"] for r in quint]) >= 0.99
    bad = plain_head([[40, 32]])
    save_heads(tmp_path / "runs" / "wrong", {"audio": bad}, {"run": "wrong"}, space="text")
    with pytest.raises(ManifestError, match="pair.head_run: the audio head of run 'wrong' takes dim 40"):
        pair.run(make_manifest(tmp_path, head_run="wrong"))


# ----------------------------------------------------------------------------- review regressions


def small_head_stores(tmp_path):
    keys = [f"k{i:03d}" for i in range(60)]
    rng = np.random.default_rng(7)
    write_store(tmp_path, "text", keys, rng.standard_normal((60, 8)))
    write_store(tmp_path, "image", keys, rng.standard_normal((60, 12)))
    return keys


def export_heads(tmp_path, seed):
    torch.manual_seed(seed)
    save_heads(tmp_path / "runs" / "r1", {"image": plain_head([[12, 16], [16, 8]])}, {}, "text")


def test_retrained_heads_and_changed_stores_discard_old_chunks(tmp_path):
    keys = small_head_stores(tmp_path)
    manifest = make_manifest(tmp_path, head_run="r1", k=3, engine="torch", device="cpu", save_index=False,
                             query_chunk=25)
    export_heads(tmp_path, 0)
    assert pair.run(manifest)["chunks_reused"] == 0
    assert pair.run(manifest)["chunks_reused"] == 3  # nothing changed: every chunk is reused
    export_heads(tmp_path, 1)  # the head run is retrained under the same name
    assert pair.run(manifest)["chunks_reused"] == 0
    stale_free = read(tmp_path, "neighbors.parquet")
    import shutil

    shutil.rmtree(tmp_path / "pairs")
    pair.run(manifest)
    assert read(tmp_path, "neighbors.parquet") == stale_free
    # a store re-encoded with another encoder digest (same keys) or rewritten into other parts
    image = np.random.default_rng(7).standard_normal((60, 12))
    write_embeddings(embeddings_dir(tmp_path, "image") / part_name("000000"), keys, image, dtype="float32",
                     metadata={"modality": "image", "digest": "v2"})
    assert pair.run(manifest)["chunks_reused"] == 0
    write_store(tmp_path, "text", keys, np.random.default_rng(7).standard_normal((60, 8)), parts=2)
    assert pair.run(manifest)["chunks_reused"] == 0
    assert pair.run(manifest)["chunks_reused"] == 3


def meta_store(tmp_path, modality, **metadata):
    write_embeddings(embeddings_dir(tmp_path, modality) / part_name("000000"), ["a", "b", "c"],
                     np.eye(3, 8), dtype="float32", metadata={"modality": modality, **metadata})


def test_equal_dims_from_unrelated_encoders_are_not_one_space(tmp_path):
    meta_store(tmp_path, "text", encoder="minilm-l6")
    meta_store(tmp_path, "audio", encoder="whisper-tiny")
    with pytest.raises(ManifestError, match=r"pair.targets: the audio store \(encoder 'whisper-tiny'\).*"
                                            r"text store \(encoder 'minilm-l6'\).*pair.head_run.*pair.targets"):
        pair.run(make_manifest(tmp_path, k=1))
    meta_store(tmp_path, "audio", encoder="whisper-tiny", space="s1")  # only one side names a space
    with pytest.raises(ManifestError, match="pair.targets: the audio store"):
        pair.run(make_manifest(tmp_path, k=1))
    meta_store(tmp_path, "text", encoder="minilm-l6", space="s2")  # both name a space, and they differ
    with pytest.raises(ManifestError, match="space 's1'.*space 's2'"):
        pair.run(make_manifest(tmp_path, k=1))
    meta_store(tmp_path, "text", encoder="minilm-l6", space="s1")  # both name the same space
    assert pair.run(make_manifest(tmp_path, k=1))["targets"] == ["audio"]
    clip = "hf:openai/clip-vit-large-patch14-336"  # CLIP's text and image towers: one encoder spec
    meta_store(tmp_path, "text", encoder=clip)
    meta_store(tmp_path, "image", encoder=clip)
    assert pair.run(make_manifest(tmp_path, k=1, targets=["image"]))["targets"] == ["image"]
    # with a head run, an unprojected target of another encoder still fails, naming pair.head_run
    save_heads(tmp_path / "runs" / "r1", {"image": plain_head([[8, 8]])}, {}, "text")
    with pytest.raises(ManifestError, match="pair.head_run: the audio store"):
        pair.run(make_manifest(tmp_path, k=1, head_run="r1"))


def test_summary_is_replaced_atomically_and_quintuples_name_the_query(tmp_path):
    from pipeline.core.store import read_metadata

    write_planted_stores(tmp_path, n=60, dims=SHARED, noise=0.5)
    pair.run(make_manifest(tmp_path, k=2, save_index=False))
    path = tmp_path / "pairs" / "summary.json"
    with path.open() as old:  # a reader of the old summary keeps a whole file while a new one is written
        before = path.read_text()
        pair.run(make_manifest(tmp_path, k=3, save_index=False))
        assert old.read() == before and json.loads(before)["params"]["k"] == 2
    assert json.loads(path.read_text())["params"]["k"] == 3
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    meta = read_metadata(tmp_path / "pairs" / "quintuples.parquet")
    assert meta["query"] == "text" and meta["targets"] == ["image", "video"]


def test_save_heads_replaces_each_file_atomically_config_last(tmp_path, monkeypatch):
    import os

    from pipeline.core.heads_file import CONFIG_FILE, HEADS_FILE, load_heads

    run_dir = tmp_path / "runs" / "r1"
    export_heads(tmp_path, 0)
    olds = {name: (run_dir / name).open("rb") for name in (HEADS_FILE, CONFIG_FILE)}
    before = {name: (run_dir / name).read_bytes() for name in olds}
    replaced, real_replace = [], os.replace

    def record(src, dst):
        replaced.append(os.path.basename(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", record)
    save_heads(run_dir, {"image": plain_head([[12, 4]])}, {"v": 2}, "text")
    assert replaced == [HEADS_FILE, CONFIG_FILE]
    for name, f in olds.items():
        assert f.read() == before[name]  # an open reader never sees a half-written file
        f.close()
    assert sorted(p.name for p in run_dir.iterdir()) == sorted([HEADS_FILE, CONFIG_FILE])
    heads, config = load_heads(run_dir)
    assert heads["image"][0].out_features == 4 and config["v"] == 2
