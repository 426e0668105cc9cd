"""Class 3, stores trusted blindly: every reader checks what it reads and names the file and the fix.

Damaged bytes (fuzzed flips and cuts), NaN rows, rows of norm 512, mixed dtypes and a key stored
twice: each is one StoreError naming the part (and the fix), in the library and as exit code 1
of `bindery pair`, `train` and `publish`, never a pyarrow traceback and never a different vector.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.core import store
from pipeline.core.layout import OutputLayout
from pipeline.core.store import (
    StoreError,
    embeddings_dir,
    list_parts,
    read_metadata,
    read_store,
    write_embeddings,
)
from tests.planted import write_planted_stores

DIMS = {"text": 16, "image": 16, "audio": 8}
FIX = r"delete \S+part-000001\.parquet and re-run `bindery precompute`, which makes shard 000001's parts again"


@pytest.fixture
def planted(tmp_path) -> Path:
    write_planted_stores(tmp_path, n=120, dims=DIMS, parts=2)
    return tmp_path


def rewrite(part: Path, change) -> None:
    """Rewrite a part (valid checksums) with ``change(keys, vectors, metadata)`` applied."""
    s = store.read_part(part)
    keys, vectors, meta = list(s.keys), np.array(s.vectors, dtype=np.float32), dict(s.metadata)
    change(keys, vectors, meta)
    write_embeddings(part, keys, vectors, dtype=meta.get("dtype", "float32"), metadata=meta)


def second_part(out: Path, modality: str = "audio") -> Path:
    return list_parts(embeddings_dir(out, modality))[1]


def manifest(out: Path) -> Path:
    """A manifest over the planted stores, for the CLI (pair and train read them; no shard is read)."""
    lines = ["[dataset]", 'name = "planted"', 'shards = "unused-{0..1}.tar"', f'output = "{out}"']
    for m in DIMS:
        lines += [f"[modalities.{m}]", f'encoder = "planted-{m}"']
    lines += ["[pair]", "k = 2", "[train]", "hidden = 16", "epochs = 1", "batch_size = 32"]
    path = out / "m.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def set_row(row: int, value: float):
    def change(keys, vectors, meta):
        vectors[row] = value

    return change


UNIT = r", but the metadata says the vectors are normalised to 1"


@pytest.mark.parametrize(("value", "what"), [(np.nan, r"holds a non-finite value \(NaN or inf\)"),
                                             (128 * np.sqrt(2), r"has norm 512" + UNIT),  # dim 8: 128 * sqrt(2 * 8)
                                             (0.0, r"has norm 0" + UNIT)],
                         ids=["nan", "norm-512", "zero"])
def test_a_bad_row_is_refused_by_every_reader(planted, capsys, value, what):
    part = second_part(planted)
    rewrite(part, set_row(3, value))
    message = rf"^{re.escape(str(part))}: row 3 \(key 's\d+'\) {what}; {FIX}$"
    with pytest.raises(StoreError, match=message):
        read_store(planted, "audio")
    with pytest.raises(StoreError, match=message):
        store.verify_store(planted, "audio")
    from trainer.data.stream import MappedStore

    mapped = MappedStore(OutputLayout(planted), "audio", budget=1 << 20)
    with pytest.raises(StoreError, match=rf"^{re.escape(str(part))}: row 3 {what}"):
        mapped[np.arange(len(mapped))]
    for command in ("pair", "train", "publish"):
        assert main([command, str(manifest(planted))]) == 1
        err = capsys.readouterr().err
        assert err.splitlines()[-1].startswith(f"bindery {command}: error: {part}: row 3") and "Traceback" not in err


def test_a_scale_in_the_metadata_is_the_norm_promised(planted):
    def scaled(keys, vectors, meta):
        vectors *= 2.0
        meta["scale"] = 2

    # the scale is part of the store's identity (a store follows one convention), so every part is rescaled
    for part in list_parts(embeddings_dir(planted, "audio")):
        rewrite(part, scaled)
    assert np.allclose(np.linalg.norm(read_store(planted, "audio").vectors, axis=1), 2.0, atol=1e-5)

    def rescaled(keys, vectors, meta):  # a part consistent in itself (norm 3, scale 3), unlike its store
        vectors *= 1.5
        meta["scale"] = 3

    rewrite(second_part(planted), rescaled)
    with pytest.raises(StoreError, match="mixes encoders"):  # parts of one store never differ in scale
        read_store(planted, "audio")


def test_mixed_float16_and_float32_parts_are_refused(planted):
    part = second_part(planted)
    rewrite(part, lambda keys, vectors, meta: meta.update(dtype="float16"))
    with pytest.raises(StoreError, match=r"mixes encoders: part-000000.parquet has .*'dtype': 'float32'.*"
                                         r"part-000001.parquet has .*'dtype': 'float16'"):
        read_store(planted, "audio")
    meta = read_metadata(part)
    s = store.read_part(list_parts(embeddings_dir(planted, "audio"))[0])
    write_embeddings(part, [f"x{i}" for i in range(3)], np.eye(3, 8), dtype="float16", metadata={**meta,
                                                                                                 "dtype": "float32"})
    with pytest.raises(StoreError, match=r"its vectors are float16 of dim 8, its metadata says float32 of dim 8"):
        read_store(planted, "audio")
    assert s.vectors.dtype == np.float32


def test_a_key_stored_twice_names_the_key_and_both_parts(planted, capsys):
    first, second = list_parts(embeddings_dir(planted, "text"))
    taken = store.read_part(first).keys[5]

    def repeat(keys, vectors, meta):
        keys[0] = taken

    rewrite(second, repeat)
    message = rf"^key '{taken}' is stored in {re.escape(str(first))} and in {re.escape(str(second))};"
    with pytest.raises(StoreError, match=message):
        read_store(planted, "text")
    from trainer.data.stream import MappedStore

    with pytest.raises(StoreError, match=message):
        MappedStore(OutputLayout(planted), "text", budget=1 << 20).read_keys()
    for command in ("pair", "train", "publish"):
        assert main([command, str(manifest(planted))]) == 1
        assert f"key '{taken}' is stored in" in capsys.readouterr().err
    rewrite(second, lambda keys, vectors, meta: keys.__setitem__(1, keys[2]))
    with pytest.raises(StoreError, match=rf"is stored twice in {re.escape(str(second))}"):
        store.read_part(second)


def test_a_status_part_with_an_unknown_status_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = store.status_dir(tmp_path, "image") / "part-000001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"key": ["a"], "status": ["fine"], "error": [""]}), path)
    with pytest.raises(StoreError, match=rf"^{re.escape(str(path))}: status values \['fine'\] are not among"):
        store.read_status(tmp_path, "image")


# ----------------------------------------------------------------------------- fuzzing


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A two-part float16 store (keys, vectors) and the bytes of its second part."""
    out = tmp_path_factory.mktemp("fuzz")
    write_planted_stores(out, n=80, dims={"text": 16}, parts=2, dtype="float16")
    part = second_part(out, "text")
    return out, part, part.read_bytes(), read_store(out, "text")


def _same_or_refused(out: Path, expected) -> None:
    try:
        got = read_store(out, "text")
    except StoreError as exc:
        assert "part-000001.parquet" in str(exc) and "delete" in str(exc)
        return
    assert list(got.keys) == list(expected.keys) and got.vectors.dtype == expected.vectors.dtype
    np.testing.assert_array_equal(got.vectors, expected.vectors)  # never a silently different vector


FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_byte_flips_in_a_part_are_refused_or_harmless(pristine, data):
    out, part, good, expected = pristine
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)), min_size=1, max_size=3))
    damaged = bytearray(good)
    for pos, mask in flips:
        damaged[pos] ^= mask
    part.write_bytes(bytes(damaged))
    try:
        _same_or_refused(out, expected)
    finally:
        part.write_bytes(good)


@FUZZ
@given(cut=st.integers(0, 10**6))
def test_a_truncated_part_is_refused(pristine, cut):
    out, part, good, expected = pristine
    part.write_bytes(good[:cut % len(good)])
    try:
        with pytest.raises(StoreError, match="part-000001.parquet: cannot be read"):
            read_store(out, "text")
    finally:
        part.write_bytes(good)
