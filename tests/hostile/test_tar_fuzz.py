"""Property-based fuzzing of the tar reader: flips and cuts never give a traceback or a silent change.

A plain tar checksums its headers, not its data: a flipped header (or end block) is a fault, a
flipped data byte changes only the member it falls in (the decoders catch what they can). A
gzip stream checksums everything: any change to what is read comes with a fault. A cut tar
gives the complete samples before the cut, then a fault.
"""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest.shards import ShardFault, iter_samples
from tests.hostile import bombs

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
ITEMS = [(f"k{i}", {"txt": f"caption {i} ".encode() * (i + 1), "json": b'{"i": %d}' % i}) for i in range(4)]


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """(folder, tar bytes, samples as read from the pristine tar, data regions (start, stop, key, ext))."""
    folder = tmp_path_factory.mktemp("tarfuzz")
    data = bombs.samples(ITEMS) + bombs.END
    path = bombs.write(folder / "s.tar", data)
    with tarfile.open(path) as tar:
        regions = [(m.offset_data, m.offset_data + m.size, *m.name.split(".", 1)) for m in tar.getmembers()]
    return folder, data, list(iter_samples(str(path))), regions


def read(folder: Path, name: str, data: bytes) -> list:
    path = bombs.write(folder / name, data)
    out = list(iter_samples(str(path)))  # never raises: that is the first property
    assert not any(isinstance(s, ShardFault) for s in out[:-1])  # a fault, if any, comes last
    return out


@FUZZ
@given(pos=st.integers(0, 10**6), mask=st.integers(1, 255))
def test_a_flipped_byte_is_a_fault_or_changes_only_its_own_member(original, pos, mask):
    folder, data, expected, regions = original
    pos %= len(data)
    damaged = bytearray(data)
    damaged[pos] ^= mask
    got = read(folder, "flip.tar", bytes(damaged))
    inside = [(key, ext) for start, stop, key, ext in regions if start <= pos < stop]
    samples = [s for s in got if not isinstance(s, ShardFault)]
    if not inside:  # a header, padding or an end block: a fault, or (padding) nothing changed
        assert isinstance(got[-1], ShardFault) or got == expected
        assert samples == expected[:len(samples)]
        return
    assert len(got) == len(expected)  # tar data has no checksum: every sample is read, and
    assert got == [  # only the member holding the flipped byte differs
        {k: (v if (e["__key__"], k) != inside[0] else g[k]) for k, v in e.items()} for g, e in zip(got, expected, strict=True)]


@FUZZ
@given(cut=st.integers(0, 10**6))
def test_a_cut_tar_gives_the_complete_samples_before_the_cut_then_a_fault(original, cut):
    folder, data, expected, _ = original
    cut %= len(data)
    got = read(folder, "cut.tar", data[:cut])
    samples = [s for s in got if not isinstance(s, ShardFault)]
    assert samples == expected[:len(samples)]
    if cut < len(data) - bombs.BLOCK:  # more than the last end block is gone: the cut must be seen
        assert isinstance(got[-1], ShardFault)


@FUZZ
@given(pos=st.integers(0, 10**6), mask=st.integers(1, 255), cut=st.booleans())
def test_a_damaged_gzip_shard_is_read_right_or_faulted(original, pos, mask, cut):
    folder, data, expected, _ = original
    packed = bytearray(gzip.compress(data, mtime=0))
    pos %= len(packed)
    if cut:
        damaged = bytes(packed[:pos])
    else:
        packed[pos] ^= mask
        damaged = bytes(packed)
    got = read(folder, "s.tar.gz", damaged)
    assert got == expected or isinstance(got[-1], ShardFault)  # gzip's CRC: no change goes unnoticed
