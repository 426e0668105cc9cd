"""Class 2, keys that are not unique: a repeated key is one sample and ``duplicate`` status rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.manifest import ImageConfig, TextConfig, load
from pipeline.core.store import StoreError, read_status, read_store
from pipeline.ingest.decode import DecodeError, decode_member
from pipeline.ingest.shards import DUPLICATE, iter_samples
from tests.conftest import jpeg_bytes
from tests.hostile import bombs
from tests.hostile.encoders import StatsEncoder


def test_a_key_that_comes_back_later_in_its_shard_is_a_duplicate(tmp_path):
    """``a.txt, b.txt, a.jpg``: sample ``a`` is the caption; the later ``a`` is a duplicate naming the
    shard, for every modality (its jpg is not decoded), never a second row for ``a``."""
    members = bombs.member("a.txt", b"a caption") + bombs.member("b.txt", b"b caption") \
        + bombs.member("a.jpg", jpeg_bytes(0, 16))
    path = bombs.write(tmp_path / "mixed-000.tar", members + bombs.END)
    first, second, again = list(iter_samples(str(path)))
    assert (first["__key__"], second["__key__"], again["__key__"]) == ("a", "b", "a")
    assert DUPLICATE not in first and again[DUPLICATE] == "mixed-000"
    assert decode_member(first, "text", TextConfig(encoder="x")) == "a caption"
    for modality, cfg in (("image", ImageConfig(encoder="x")), ("text", TextConfig(encoder="x"))):
        with pytest.raises(DecodeError) as exc:
            decode_member(again, modality, cfg)
        assert exc.value.status == "duplicate"
        assert str(exc.value) == "duplicate key 'a': first seen in shard mixed-000"


def test_members_cannot_overwrite_the_samples_own_fields(tmp_path):
    path = bombs.write(tmp_path / "s.tar", bombs.member("x.txt", b"ok") + bombs.member("x.__key__", b"evil")
                       + bombs.member("x.__duplicate_of__", b"evil") + bombs.END)
    (sample,) = list(iter_samples(str(path)))
    assert sample == {"__key__": "x", "txt": b"ok"}


# ----------------------------------------------------------------------------- whole runs


def _manifest(tmp_path: Path, shards: list[Path], out: Path, workers: int = 0) -> Path:
    path = tmp_path / f"keys-{out.name}.toml"
    pattern = "::".join(str(s) for s in shards)
    path.write_text(f'[dataset]\nname = "keys"\nshards = "{pattern}"\noutput = "{out}"\n'
                    '[modalities.text]\nencoder = "hostile-stats"\n[modalities.image]\nencoder = "hostile-stats"\n'
                    f'[precompute]\ndevice = "cpu"\nnum_workers = {workers}\n')
    return path


@pytest.fixture
def two_shards(tmp_path) -> list[Path]:
    """a-000: x (caption + image), y (caption). b-000: y and x again (other captions), then z, w, z
    (z's image comes after w: a key repeated inside its shard)."""
    a = bombs.member("x.txt", b"xa caption") + bombs.member("x.jpg", jpeg_bytes(1, 16)) \
        + bombs.member("x.json", b'{"from": "a"}') + bombs.member("y.txt", b"ya caption")
    b = bombs.member("y.txt", b"yb caption") + bombs.member("x.txt", b"xb caption") \
        + bombs.member("x.json", b'{"from": "b"}') + bombs.member("z.txt", b"zb caption") \
        + bombs.member("w.txt", b"wb caption") + bombs.member("z.jpg", jpeg_bytes(2, 16))
    return [bombs.write(tmp_path / "a-000.tar", a + bombs.END), bombs.write(tmp_path / "b-000.tar", b + bombs.END)]


def _store(out: Path) -> dict:
    """Everything a run leaves, comparable: per modality the vectors by key and every status row."""
    from pipeline.core.layout import OutputLayout
    from pipeline.core.samples import iter_sample_metadata

    snap = {m: ({k: v.tobytes() for k, v in zip(read_store(out, m).keys, read_store(out, m).vectors, strict=True)},
                sorted(tuple(r.values()) for r in read_status(out, m).to_pylist())) for m in ("text", "image")}
    return {**snap, "metadata": sorted((k, json.dumps(v)) for k, v in iter_sample_metadata(OutputLayout(out)))}


def test_a_repeated_key_is_one_row_and_duplicate_rows_naming_its_first_shard(two_shards, tmp_path):
    import tests.hostile.encoders  # noqa: F401 - registers hostile-stats
    from pipeline.precompute.stage import run

    out = tmp_path / "out"
    summary = run(load(_manifest(tmp_path, two_shards, out)))
    text, image = read_store(out, "text"), read_store(out, "image")  # the checked reader: each key once
    assert sorted(text.keys) == ["w", "x", "y", "z"] and sorted(image.keys) == ["x"]
    caption = StatsEncoder("text").preprocessor()(["xa caption"])["x"][0].numpy()
    np.testing.assert_allclose(text.vectors[list(text.keys).index("x")].astype(np.float32),
                               caption / np.linalg.norm(caption), atol=1e-3)  # float16: the first shard's caption
    first_a = "duplicate key '{}': first seen in shard a-000"
    for m in ("text", "image"):
        rows = sorted((r["key"], r["status"], r["error"]) for r in read_status(out, m).to_pylist())
        dups = [r for r in rows if r[1] == "duplicate"]
        assert dups == [("x", "duplicate", first_a.format("x")), ("y", "duplicate", first_a.format("y")),
                        ("z", "duplicate", "duplicate key 'z': first seen in shard b-000")]
        assert summary["counts"][m]["duplicate"] == 3
        stored = set(read_store(out, m).keys)
        own = [r[0] for r in rows if r[1] != "duplicate"]
        assert sorted([*stored, *own]) == ["w", "x", "y", "z"]  # every key once, besides its duplicate rows
    assert [r[:2] for r in sorted(tuple(r.values()) for r in read_status(out, "image").to_pylist())
            if r[1] == "missing"] == [("w", "missing"), ("y", "missing"), ("z", "missing")]
    assert _store(out)["metadata"] == [("w", "{}"), ("x", '{"from": "a"}'), ("y", "{}"), ("z", "{}")]
    assert summary["deduplicated"] == {"text": 2, "image": 2}  # b's x and y: a vector or a row each


def test_the_rule_holds_under_workers_reruns_and_a_late_first_shard(two_shards, tmp_path):
    import tests.hostile.encoders  # noqa: F401
    from pipeline.precompute.stage import run

    run(load(_manifest(tmp_path, two_shards, tmp_path / "clean")))
    clean = _store(tmp_path / "clean")
    run(load(_manifest(tmp_path, two_shards, tmp_path / "workers", workers=2)))
    assert _store(tmp_path / "workers") == clean
    late = tmp_path / "late"
    run(load(_manifest(tmp_path, two_shards[1:], late)))  # b-000 alone: its x and y are its own
    assert sorted(read_store(late, "text").keys) == ["w", "x", "y", "z"]
    again = run(load(_manifest(tmp_path, two_shards, late)))  # a-000 comes first in the pattern
    assert _store(late) == clean and again["deduplicated"]["text"] == 2
    assert run(load(_manifest(tmp_path, two_shards, late)))["deduplicated"] == {"text": 0, "image": 0}
    assert _store(late) == clean


def test_a_run_killed_between_the_two_writes_of_the_pass_is_repaired_by_the_next(two_shards, tmp_path, monkeypatch):
    import tests.hostile.encoders  # noqa: F401
    from pipeline.precompute import dedupe
    from pipeline.precompute.stage import run

    run(load(_manifest(tmp_path, two_shards, tmp_path / "clean")))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the status part is written, the embeddings part is not

    out = tmp_path / "out"
    monkeypatch.setattr(dedupe, "atomic_write_table", killed)
    with pytest.raises(KeyboardInterrupt):
        run(load(_manifest(tmp_path, two_shards, out)))
    with pytest.raises(StoreError, match=r"key '[xy]' is stored in .*part-a-000.parquet and in .*part-b-000.parquet"):
        read_store(out, "text")  # the half-done pass is refused by readers, never silently used
    monkeypatch.undo()
    run(load(_manifest(tmp_path, two_shards, out)))
    assert _store(out) == _store(tmp_path / "clean")
