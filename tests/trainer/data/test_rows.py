"""Rows joined from quintuples, captions and rated triples; batches gathered by index, from whole
tensors or streamed from memory-mapped Parquet."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import ManifestError
from pipeline.core.store import META_PREFIX
from tests.planted import write_planted_stores
from tests.trainer.conftest import DIMS, load_checked, make_manifest, write_quintuples
from trainer import train
from trainer.batch import Batch
from pipeline.core.split import is_val
from trainer.data.stream import MappedStore
from trainer.train import epoch_blocks, make_batch, train_rows


def test_captions_join_by_same_key_and_mask_missing(tmp_path):
    vectors = write_planted_stores(tmp_path, n=50, dims=DIMS, drop={"audio": [3, 4], "points": [4, 7]})
    data = load_checked(make_manifest(tmp_path, use_quintuples=False))
    assert data.modalities == ["audio", "points"]
    akeys = data.keys["text"][data.rows.anchor]
    assert len(data.rows) == 49 and "s00004" not in set(akeys)  # item 4 has no partner at all
    batch = data.batch(torch.arange(len(data.rows)), torch.device("cpu"))
    audio, points = batch.modalities["audio"], batch.modalities["points"]
    akeys = data.keys["text"][data.rows.anchor]
    for i, key in enumerate(akeys):
        n = int(key[1:])
        assert torch.allclose(batch.anchor[i], torch.from_numpy(vectors["text"][n]).float())
        assert bool(audio.mask[i]) == (n not in (3, 4))
        assert bool(points.mask[i]) == (n not in (4, 7))
        if n not in (3, 4):
            assert torch.allclose(audio.vectors[i], torch.from_numpy(vectors["audio"][n]).float())
        else:
            assert audio.vectors[i].abs().sum() == 0
    assert audio.bad is None and audio.bad_mask is None


def test_quintuples_join_partners_and_keep_null_targets(tmp_path):
    vectors = write_planted_stores(tmp_path, n=20, dims=DIMS)
    # query s00000 pairs with audio s00005 and no points; s00001 with points s00009; unknown query dropped
    write_quintuples(tmp_path, ["s00000", "s00001", "nope"],
                     {"audio": ["s00005", None, "s00001"], "points": [None, "s00009", "s00002"]})
    data = load_checked(make_manifest(tmp_path, use_captions=False))
    assert len(data.rows) == 2
    audio, points = data.batch(torch.arange(2), torch.device("cpu")).modalities.values()
    assert audio.mask.tolist() == [True, False] and points.mask.tolist() == [False, True]
    assert torch.allclose(audio.vectors[0], torch.from_numpy(vectors["audio"][5]).float())
    assert torch.allclose(points.vectors[1], torch.from_numpy(vectors["points"][9]).float())


def test_triples_good_partial_bad(tmp_path):
    vectors = write_planted_stores(tmp_path, n=20, dims=DIMS)
    path = tmp_path / "triples.parquet"
    pq.write_table(pa.table({"query_key": ["s00000", "s00000", "s00001", "s00002"],
                             "modality": ["audio", "audio", "points", "audio"],
                             "target_key": ["s00003", "s00004", "s00006", "s00007"],
                             "label": ["good", "bad", "partial", "good"]}), path)
    # val_fraction ~0: every key on the training side (the split's masking is tested below)
    base = {"use_captions": False, "use_quintuples": False, "triples": str(path), "val_fraction": 1e-9}
    dropped = load_checked(make_manifest(tmp_path, **base))
    assert len(dropped.rows) == 2  # the partial row is dropped
    soft = load_checked(make_manifest(tmp_path, **base, partial="soft", partial_weight=0.25))
    assert len(soft.rows) == 3
    audio, points = soft.batch(torch.arange(3), torch.device("cpu")).modalities.values()
    assert audio.mask.tolist() == [True, False, True] and points.mask.tolist() == [False, True, False]
    assert points.weight[1].item() == 0.25 and audio.weight[0].item() == 1.0
    assert audio.bad_mask.tolist() == [True, False, False]
    assert torch.allclose(audio.bad[0], torch.from_numpy(vectors["audio"][4]).float())
    assert torch.allclose(audio.vectors[0], torch.from_numpy(vectors["audio"][3]).float())


def test_missing_triples_and_no_rows_are_config_errors(tmp_path):
    write_planted_stores(tmp_path, n=10, dims=DIMS)
    with pytest.raises(ManifestError, match="train.triples"):
        load_checked(make_manifest(tmp_path, triples=str(tmp_path / "nope.parquet")))
    with pytest.raises(ManifestError, match="no training rows"):
        load_checked(make_manifest(tmp_path, use_captions=False))


def test_split_holds_out_rows_by_anchor_key(tmp_path):
    write_planted_stores(tmp_path, n=300, dims=DIMS)
    data = load_checked(make_manifest(tmp_path, val_fraction=0.3, use_quintuples=False))
    again = load_checked(make_manifest(tmp_path, val_fraction=0.3, use_quintuples=False))
    assert np.array_equal(data.val_idx, again.val_idx)
    assert 0.2 < len(data.val_idx) / len(data.rows) < 0.4
    assert not set(data.train_idx) & set(data.val_idx)


def test_no_training_row_references_a_held_out_item_in_any_modality(tmp_path):
    """evaluate splits every store by its own keys, so a training row may pair with (and a rated bad
    partner may be) only training-side items, and a held-out row only held-out ones; quintuples
    and triples pair across keys, so the rows' partners are masked to the anchor's side."""
    n = 300
    write_planted_stores(tmp_path, n=n, dims=DIMS)
    keys = [f"s{i:05d}" for i in range(n)]
    write_quintuples(tmp_path, keys, {"audio": [keys[(i + 1) % n] for i in range(n)],
                                      "points": [keys[(i + 7) % n] for i in range(n)]})
    triples = tmp_path / "triples.parquet"
    pq.write_table(pa.table({"query_key": [*keys[:100], *keys[:100]], "modality": ["audio"] * 200,
                             "target_key": [*keys[3:103], *keys[50:150]], "label": ["good"] * 100 + ["bad"] * 100}),
                   triples)
    frac = 0.3
    # no caption rows: with them, quintuple partners where the caption's own sample has an item are dropped
    data = load_checked(make_manifest(tmp_path, val_fraction=frac, triples=str(triples), use_captions=False))
    rows = data.rows
    assert data.has_bad("audio")
    for side, idx in ((False, data.train_idx), (True, data.val_idx)):
        assert (is_val(data.keys["text"][rows.anchor[idx]], 0, frac) == side).all()
        for m in data.modalities:
            for col in (rows.partner[m], rows.bad[m]):
                j = col[idx]
                partner_keys = data.keys[m][j[j >= 0]]
                assert (is_val(partner_keys, 0, frac) == side).all(), (side, m)
    for m in data.modalities:  # cross-key partners remain on both sides (the masking is not all-or-nothing)
        j = rows.partner[m][data.train_idx]
        cross = data.keys[m][j[j >= 0]] != data.keys["text"][rows.anchor[data.train_idx][j >= 0]]
        assert cross.sum() > 50, m
    # the batches the trainer gathers hold no held-out vector either
    batch = data.batch(torch.as_tensor(data.train_idx), torch.device("cpu"))
    for m in data.modalities:
        j = rows.partner[m][data.train_idx]
        assert batch.modalities[m].mask.numpy().tolist() == (j >= 0).tolist()


def test_quintuples_of_another_query_modality_are_a_config_error(tmp_path):
    """`bindery pair` records its query modality as ``bindery.query``; quintuples whose queries are
    not anchor items must not be joined as if they were."""
    write_planted_stores(tmp_path, n=20, dims=DIMS)
    path = write_quintuples(tmp_path, ["s00000", "s00001"], {"points": ["s00005", "s00009"]})

    def tag(query: str) -> None:
        table = pq.read_table(path)
        pq.write_table(table.replace_schema_metadata({f"{META_PREFIX}query": f'"{query}"'}), path)

    tag("audio")
    with pytest.raises(ManifestError, match=r"pair\.query / train\.anchor.*'audio'.*'text'"):
        load_checked(make_manifest(tmp_path, use_captions=False))
    assert len(load_checked(make_manifest(tmp_path, use_quintuples=False)).rows) == 20  # quintuples off: not read
    tag("text")
    assert len(load_checked(make_manifest(tmp_path, use_captions=False)).rows) == 2


def test_val_fraction_holding_out_every_row_is_a_config_error(tmp_path):
    write_planted_stores(tmp_path, n=50, dims=DIMS)
    assert not (~is_val([f"s{i:05d}" for i in range(50)], 0, 0.9999)).any()  # every key held out
    with pytest.raises(ManifestError, match=r"train\.val_fraction"):
        load_checked(make_manifest(tmp_path, val_fraction=0.9999))


def fields(batch: Batch) -> dict[tuple[str, str], torch.Tensor]:
    """Every tensor of a batch by (modality or "anchor", field), absent bad partners left out."""
    out = {("anchor", "vectors"): batch.anchor}
    for m, side in batch.modalities.items():
        for f in dataclasses.fields(side):
            if getattr(side, f.name) is not None:
                out[m, f.name] = getattr(side, f.name)
    return out


def small_row_groups(output, rows: int = 16) -> None:
    """Rewrite every store part with ``rows``-row row groups (zstd, metadata kept), so a store has many."""
    for path in (output / "embeddings").glob("*/part-*.parquet"):
        pq.write_table(pq.read_table(path), path, row_group_size=rows, compression="zstd")


def test_stream_gathers_the_same_batches_as_in_memory_within_the_budget(tmp_path):
    """Stream mode reads memory-mapped parts (16-row row groups) through a cache of ~10 KB of the
    ~115 KB of vectors, and every training batch of two epochs equals the in-memory one bit for bit."""
    write_planted_stores(tmp_path, n=400, dims=DIMS, drop={"audio": [3, 4]})
    small_row_groups(tmp_path)
    write_quintuples(tmp_path, ["s00000", "s00001"], {"audio": ["s00005", None], "points": [None, "s00009"]})
    base = {"batch_size": 32, "val_fraction": 0.2}
    whole = load_checked(make_manifest(tmp_path, in_memory="gpu", **base))
    budget_gb = 10_000 / 2**30
    streamed = load_checked(make_manifest(tmp_path, in_memory="stream", memory_gb=budget_gb, **base))
    ahead = load_checked(make_manifest(tmp_path, in_memory="stream", memory_gb=4 * budget_gb, **base))  # read-ahead windows
    steps = ahead.window_steps(32)
    assert streamed.window_steps(32) == 1 and steps == 4 and whole.window_steps(32) == 0
    assert not whole.streaming and streamed.streaming and streamed.device == torch.device("cpu")
    stores = streamed.vectors
    assert all(isinstance(v, MappedStore) for v in stores.values())
    assert streamed.dims() == whole.dims() and {m: len(v) for m, v in stores.items()} == {"text": 400, "audio": 398, "points": 400}
    for m in stores:
        assert np.array_equal(streamed.keys[m], whole.keys[m])
    assert np.array_equal(streamed.train_idx, whole.train_idx) and np.array_equal(streamed.rows.anchor, whole.rows.anchor)
    budgets = {m: v.budget for m, v in stores.items()}
    assert sum(budgets.values()) <= 10_000 and min(budgets.values()) >= 16 * 16 * 4  # >= one 16-row group each
    total = sum(v.nbytes for v in stores.values())
    assert total > 10 * 10_000
    for epoch in range(2):
        blocks = epoch_blocks(len(whole.train_idx), epoch, 0, 32, 1)
        for s in range(blocks.shape[0]):
            if s % steps == 0:
                before = {m: v.decoded for m, v in ahead.vectors.items()}
                ahead.prefetch(train_rows(ahead, blocks[s:s + steps, 0]))
                for m, v in ahead.vectors.items():  # each touched row group decoded once for the window
                    assert v.window is not None and v.decoded - before[m] <= len(v.groups)
            a = make_batch(whole, blocks[s, 0], torch.device("cpu"))
            b = make_batch(streamed, blocks[s, 0], torch.device("cpu"))
            decoded = {m: v.decoded for m, v in ahead.vectors.items()}
            c = make_batch(ahead, blocks[s, 0], torch.device("cpu"))
            assert decoded == {m: v.decoded for m, v in ahead.vectors.items()}  # served from the window alone
            a, b, c = fields(a), fields(b), fields(c)
            assert a.keys() == b.keys() == c.keys()
            for k in a:
                assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]), (epoch, s, k)
            for v in [*stores.values(), *ahead.vectors.values()]:  # never more than its share of the budget
                assert v.cached_bytes + v.window_bytes <= v.budget
    assert all(0 < v.peak_cached_bytes <= v.budget for v in ahead.vectors.values())
    for m, v in stores.items():
        assert 0 < v.peak_cached_bytes <= v.budget and v.decoded > len(v.groups)  # groups were evicted and re-read
        assert torch.equal(v[:], whole.vectors[m]) and torch.equal(v[5:9], whole.vectors[m][5:9])
    with pytest.raises(IndexError):
        stores["text"][torch.tensor([400])]


def test_stream_row_group_over_the_budget_is_used_but_not_cached(tmp_path, caplog):
    vectors = write_planted_stores(tmp_path, n=40, dims=DIMS)  # 2 parts of 20 rows: 2,560 B per text group
    store = MappedStore(OutputLayout(tmp_path), "text", budget=1000)
    with caplog.at_level(logging.WARNING, logger="trainer.data.stream"):
        got = store[torch.tensor([39, 0, 21, 0])]
    assert np.array_equal(got.numpy(), vectors["text"][[39, 0, 21, 0]].astype(np.float32))
    assert store.cached_bytes == 0 and store.peak_cached_bytes == 0 and "exceeds what train.memory_gb" in caplog.text


def test_auto_streams_when_the_stores_exceed_the_budget(tmp_path, caplog):
    write_planted_stores(tmp_path, n=50, dims=DIMS)
    with caplog.at_level(logging.INFO, logger="trainer.data.rows"):
        tiny = load_checked(make_manifest(tmp_path, in_memory="auto", memory_gb=1e-6))
    assert tiny.streaming and "stream from memory-mapped Parquet" in caplog.text
    roomy = load_checked(make_manifest(tmp_path, in_memory="auto", memory_gb=1.0))
    assert not roomy.streaming and all(isinstance(v, torch.Tensor) for v in roomy.vectors.values())
    assert not load_checked(make_manifest(tmp_path, in_memory="auto")).streaming  # 50 small rows fit half the free RAM
    assert load_checked(make_manifest(tmp_path, in_memory="gpu", memory_gb=1e-6)).vectors["text"].shape == (50, 32)
    with pytest.raises(ManifestError, match="train.memory_gb"):
        load_checked(make_manifest(tmp_path, memory_gb=-1.0))


def test_stream_training_equals_in_memory_training(tmp_path, caplog):
    """Same seed, same batches: the exported heads of a stream run equal the in-memory run's bit for bit."""
    write_planted_stores(tmp_path, n=240, dims=DIMS)
    small_row_groups(tmp_path)
    opts = {"epochs": 2, "batch_size": 32, "dropout": 0.1}
    train.run(make_manifest(tmp_path, run="whole", in_memory="gpu", **opts))
    streamed = make_manifest(tmp_path, run="streamed", in_memory="stream", memory_gb=3e-5, **opts)  # 32 of 69 KB
    assert load_checked(streamed).window_steps(32) == 3  # the loop reads 3 steps ahead (7 steps an epoch)
    with caplog.at_level(logging.INFO, logger="trainer.data.rows"):
        train.run(streamed)
    assert "streamed from memory-mapped Parquet" in caplog.text
    whole = load_file(tmp_path / "runs/whole/heads.safetensors")
    streamed = load_file(tmp_path / "runs/streamed/heads.safetensors")
    assert whole.keys() == streamed.keys()
    for k in whole:
        assert torch.equal(whole[k], streamed[k]), k


def test_quintuple_partners_yield_to_the_own_caption(tmp_path):
    """With caption rows on, a quintuple partner in a modality where the query's own sample has an item
    is dropped (the caption row holds the truth), and a quintuple row left with no partner is no row."""
    n = 40
    write_planted_stores(tmp_path, n=n, dims=DIMS, drop={"audio": list(range(20)), "points": list(range(10))})
    keys = [f"s{i:05d}" for i in range(n)]
    write_quintuples(tmp_path, keys, {"audio": [keys[20 + i % 20] for i in range(n)],
                                      "points": [keys[10 + i % 30] for i in range(n)]})
    data = load_checked(make_manifest(tmp_path, use_quintuples=True, use_captions=True))
    rows, text = data.rows, data.keys["text"]
    side = dict(zip(keys, is_val(keys, 0, 0.1), strict=True))  # a partner across the split is masked
    cross = {m: [(text[a], data.keys[m][p]) for a, p in zip(rows.anchor, rows.partner[m], strict=True)
                 if p >= 0 and data.keys[m][p] != text[a]] for m in ("audio", "points")}
    # audio: only captions 0..19 lack their own sound, so only they keep an auto-paired one; points: 0..9
    assert sorted(q for q, _ in cross["audio"]) == [k for i, k in enumerate(keys[:20])
                                                   if side[k] == side[keys[20 + i]]]
    assert sorted(q for q, _ in cross["points"]) == [k for i, k in enumerate(keys[:10])
                                                    if side[k] == side[keys[10 + i]]]
    assert len(rows) == 30 + 20  # captions 10..39 have an own item; queries 0..19 keep an auto-pair
