"""Class 2, keys that are not unique: a repeated key is one sample and ``duplicate`` status rows."""

from __future__ import annotations

import pytest

from pipeline.core.manifest import ImageConfig, TextConfig
from pipeline.ingest.decode import DecodeError, decode_member
from pipeline.ingest.shards import DUPLICATE, iter_samples
from tests.conftest import jpeg_bytes
from tests.hostile import bombs


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
