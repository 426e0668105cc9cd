"""Rows joined from quintuples, captions and rated triples; batches gathered by index."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.manifest import ManifestError
from tests.planted import write_planted_stores
from tests.trainer.conftest import DIMS, make_manifest, write_quintuples
from trainer.data import load


def test_captions_join_by_same_key_and_mask_missing(tmp_path):
    vectors = write_planted_stores(tmp_path, n=50, dims=DIMS, drop={"audio": [3, 4], "points": [4, 7]})
    data = load(make_manifest(tmp_path, use_quintuples=False))
    assert data.modalities == ["audio", "points"]
    akeys = data.keys["text"][data.rows.anchor]
    assert len(data.rows) == 49 and "s00004" not in set(akeys)  # item 4 has no partner at all
    batch = data.batch(torch.arange(len(data.rows)), torch.device("cpu"))
    akeys = data.keys["text"][data.rows.anchor]
    for i, key in enumerate(akeys):
        n = int(key[1:])
        assert torch.allclose(batch["anchor"][i], torch.from_numpy(vectors["text"][n]).float())
        assert bool(batch["audio_mask"][i]) == (n not in (3, 4))
        assert bool(batch["points_mask"][i]) == (n not in (4, 7))
        if n not in (3, 4):
            assert torch.allclose(batch["audio"][i], torch.from_numpy(vectors["audio"][n]).float())
        else:
            assert batch["audio"][i].abs().sum() == 0
    assert "audio_bad" not in batch


def test_quintuples_join_partners_and_keep_null_targets(tmp_path):
    vectors = write_planted_stores(tmp_path, n=20, dims=DIMS)
    # query s00000 pairs with audio s00005 and no points; s00001 with points s00009; unknown query dropped
    write_quintuples(tmp_path, ["s00000", "s00001", "nope"],
                     {"audio": ["s00005", None, "s00001"], "points": [None, "s00009", "s00002"]})
    data = load(make_manifest(tmp_path, use_captions=False))
    assert len(data.rows) == 2
    batch = data.batch(torch.arange(2), torch.device("cpu"))
    assert batch["audio_mask"].tolist() == [True, False] and batch["points_mask"].tolist() == [False, True]
    assert torch.allclose(batch["audio"][0], torch.from_numpy(vectors["audio"][5]).float())
    assert torch.allclose(batch["points"][1], torch.from_numpy(vectors["points"][9]).float())


def test_triples_good_partial_bad(tmp_path):
    vectors = write_planted_stores(tmp_path, n=20, dims=DIMS)
    path = tmp_path / "triples.parquet"
    pq.write_table(pa.table({"query_key": ["s00000", "s00000", "s00001", "s00002"],
                             "modality": ["audio", "audio", "points", "audio"],
                             "target_key": ["s00003", "s00004", "s00006", "s00007"],
                             "label": ["good", "bad", "partial", "good"]}), path)
    base = {"use_captions": False, "use_quintuples": False, "triples": str(path)}
    dropped = load(make_manifest(tmp_path, **base))
    assert len(dropped.rows) == 2  # the partial row is dropped
    soft = load(make_manifest(tmp_path, **base, partial="soft", partial_weight=0.25))
    assert len(soft.rows) == 3
    b = soft.batch(torch.arange(3), torch.device("cpu"))
    assert b["audio_mask"].tolist() == [True, False, True] and b["points_mask"].tolist() == [False, True, False]
    assert b["points_weight"][1].item() == 0.25 and b["audio_weight"][0].item() == 1.0
    assert b["audio_bad_mask"].tolist() == [True, False, False]
    assert torch.allclose(b["audio_bad"][0], torch.from_numpy(vectors["audio"][4]).float())
    assert torch.allclose(b["audio"][0], torch.from_numpy(vectors["audio"][3]).float())


def test_missing_triples_and_no_rows_are_config_errors(tmp_path):
    write_planted_stores(tmp_path, n=10, dims=DIMS)
    with pytest.raises(ManifestError, match="train.triples"):
        load(make_manifest(tmp_path, triples=str(tmp_path / "nope.parquet")))
    with pytest.raises(ManifestError, match="no training rows"):
        load(make_manifest(tmp_path, use_captions=False))


def test_split_holds_out_rows_by_anchor_key(tmp_path):
    write_planted_stores(tmp_path, n=300, dims=DIMS)
    data = load(make_manifest(tmp_path, val_fraction=0.3, use_quintuples=False))
    again = load(make_manifest(tmp_path, val_fraction=0.3, use_quintuples=False))
    assert np.array_equal(data.val_idx, again.val_idx)
    assert 0.2 < len(data.val_idx) / len(data.rows) < 0.4
    assert not set(data.train_idx) & set(data.val_idx)
