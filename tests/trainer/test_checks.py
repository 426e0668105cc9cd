"""The stage-entry checks name the key and the fix before any work."""

from __future__ import annotations

import pytest

from pipeline.core.manifest import ManifestError
from tests.planted import write_planted_stores
from tests.trainer.conftest import make_manifest
from trainer.checks import check_passthrough, check_train


def test_out_dim_other_than_the_anchor_dim_is_a_manifest_error(tmp_path):
    write_planted_stores(tmp_path, n=10, dims={"text": 6, "audio": 4})
    with pytest.raises(ManifestError, match=r"train\.out_dim: 5 differs from the anchor's dim 6"):
        check_train(make_manifest(tmp_path, out_dim=5).train, make_manifest(tmp_path).layout)
    check_train(make_manifest(tmp_path, out_dim=6).train, make_manifest(tmp_path).layout)  # the anchor's dim: fine


def test_missing_stores_name_train_anchor_and_train_modalities(tmp_path):
    write_planted_stores(tmp_path, n=10, dims={"text": 6, "audio": 4})
    layout = make_manifest(tmp_path).layout
    with pytest.raises(ManifestError, match=r"train\.anchor: no embedding store for 'video'"):
        check_train(make_manifest(tmp_path, anchor="video").train, layout)
    with pytest.raises(ManifestError, match=r"train\.modalities: 'points' has no embedding store"):
        check_train(make_manifest(tmp_path, modalities=["points"]).train, layout)
    with pytest.raises(ManifestError, match=r"train\.modalities: 'text' is the anchor"):
        check_train(make_manifest(tmp_path, modalities=["text"]).train, layout)


def test_triples_without_the_columns_are_a_manifest_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_planted_stores(tmp_path, n=10, dims={"text": 6, "audio": 4})
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"query_key": ["s00000"], "label": ["good"]}), path)
    with pytest.raises(ManifestError, match=r"train\.triples: .* lacks column\(s\) \['modality', 'target_key'\]"):
        check_train(make_manifest(tmp_path, triples=str(path)).train, make_manifest(tmp_path).layout)


def test_a_passthrough_of_another_dim_is_a_manifest_error(tmp_path):
    write_planted_stores(tmp_path, n=10, dims={"text": 6, "image": 6, "audio": 4})
    layout = make_manifest(tmp_path).layout
    check_passthrough(make_manifest(tmp_path, anchor_passthrough=["image"]).train, layout)
    with pytest.raises(ManifestError, match=r"train\.anchor_passthrough: 'audio' is 4-d but the anchor 'text' is 6-d"):
        check_passthrough(make_manifest(tmp_path, anchor_passthrough=["audio"]).train, layout)
