from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core import store
from pipeline.core.layout import part_name
from tests.planted import write_planted_stores


def test_roundtrip_float16_with_metadata(tmp_path):
    vecs = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    path = store.embeddings_dir(tmp_path, "image") / part_name("s0")
    store.write_embeddings(path, list("abcde"), vecs, "float16", {"encoder": "e", "dim": 8, "preprocessing": {"a": 1}})
    part = store.read_part(path)
    assert list(part.keys) == list("abcde") and part.vectors.dtype == np.float16 and part.dim == 8
    np.testing.assert_allclose(part.vectors.astype(np.float32), vecs, atol=5e-3)
    assert part.metadata == {"encoder": "e", "dim": 8, "preprocessing": {"a": 1}}
    assert pq.read_schema(path).field("embedding").type == pa.list_(pa.float16(), 8)


def test_empty_part_and_bad_shapes(tmp_path):
    path = tmp_path / "e.parquet"
    store.write_embeddings(path, [], np.zeros((0, 4), np.float32), "float32")
    assert store.read_part(path).vectors.shape == (0, 4)
    with pytest.raises(ValueError, match="2 keys"):
        store.embedding_table(["a", "b"], np.zeros((3, 4)))


def test_atomic_write_leaves_no_temp_and_list_parts_hides_temps(tmp_path):
    folder = store.embeddings_dir(tmp_path, "text")
    store.write_embeddings(folder / part_name("1"), ["a"], np.ones((1, 2)), "float32")
    (folder / ".part-2.parquet.abc.tmp").write_bytes(b"half")
    assert [p.name for p in store.list_parts(folder)] == ["part-1.parquet"]
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == [".part-2.parquet.abc.tmp"]
    assert store.stored_modalities(tmp_path) == ["text"]
    assert store.list_parts(tmp_path / "none") == []


def test_status_tables(tmp_path):
    rows = [("k1", "missing", "no jpg"), ("k2", "corrupt", "bad")]
    store.write_status(store.status_dir(tmp_path, "image") / part_name("0"), rows)
    table = store.read_status(tmp_path, "image")
    assert [tuple(r.values()) for r in table.to_pylist()] == rows
    assert store.read_status(tmp_path, "audio").num_rows == 0
    with pytest.raises(ValueError, match="status must be one of"):
        store.status_table([("k", "weird", "")])


def test_read_store_concatenates_parts(tmp_path):
    vectors = write_planted_stores(tmp_path, n=30, parts=3)
    s = store.read_store(tmp_path, "audio")
    assert len(s) == 30 and s.dim == 24 and s.metadata["encoder"] == "planted-audio"
    np.testing.assert_allclose(s.vectors, vectors["audio"], atol=1e-6)
    with pytest.raises(FileNotFoundError, match="bindery precompute"):
        store.read_store(tmp_path, "video")


def test_read_store_refuses_parts_from_different_encoders(tmp_path):
    folder = store.embeddings_dir(tmp_path, "text")
    one = np.eye(2, 4, dtype=np.float32)
    store.write_embeddings(folder / "part-a.parquet", ["a0", "a1"], one, metadata={"encoder": "e1", "digest": "d1", "dim": 4})
    store.write_embeddings(folder / "part-b.parquet", ["b0", "b1"], one, metadata={"encoder": "e2", "digest": "d2", "dim": 4})
    with pytest.raises(ValueError, match="mixes encoders.*part-b.parquet"):
        store.read_store(tmp_path, "text")


def test_parts_carry_page_checksums_and_a_flipped_value_is_a_store_error(tmp_path):
    vecs = np.eye(4, 8, dtype=np.float32)
    path = store.embeddings_dir(tmp_path, "text") / part_name("s0")
    store.write_embeddings(path, list("abcd"), vecs, "float32", {"dim": 8, "normalized": True})
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(1)  # the embedding column
    data = bytearray(path.read_bytes())
    data[chunk.data_page_offset + chunk.total_compressed_size - 3] ^= 0x01  # inside its (compressed) page
    path.write_bytes(bytes(data))
    with pytest.raises(store.StoreError, match=r"part-s0.parquet: cannot be read .*delete .*re-run `bindery precompute`"):
        store.read_part(path)


def test_verify_store_counts_rows_and_checks_every_part(tmp_path):
    write_planted_stores(tmp_path, n=30, parts=3)
    assert store.verify_store(tmp_path, "text") == 30
    with pytest.raises(FileNotFoundError, match="bindery precompute"):
        store.verify_store(tmp_path, "video")
