from __future__ import annotations

import tarfile

import pytest

from pipeline.core.manifest import ManifestError
from pipeline.ingest.shards import ShardFault, expand_shards, iter_samples, split_by, split_member
from tests.conftest import write_tar


def test_expand_brace_pattern_and_ids(tmp_path):
    shards = expand_shards(str(tmp_path / "train-{000..002}.tar"))
    assert [s.shard_id for s in shards] == ["train-000", "train-001", "train-002"]
    assert shards[1].url == str(tmp_path / "train-001.tar")
    piped = expand_shards("pipe:curl -s https://x/data-{0..1}.tar")
    assert [s.shard_id for s in piped] == ["data-0", "data-1"]
    assert piped[0].url == "pipe:curl -s https://x/data-0.tar"


def test_duplicate_shard_ids_are_a_manifest_error():
    with pytest.raises(ManifestError, match="dataset.shards"):
        expand_shards("a/s-{0..1}.tar::b/s-{0..1}.tar")


def test_split_by_rank_then_worker_covers_everything_once():
    items = list(range(11))
    seen = []
    for rank in range(2):
        mine = split_by(items, rank, 2)
        for worker in range(3):
            seen += split_by(mine, worker, 3)
    assert sorted(seen) == items


def test_split_member():
    assert split_member("a/b/key.seg.jpg") == ("a/b/key", "seg.jpg")
    assert split_member("key.TXT") == ("key", "txt")
    assert split_member("README") is None


def _tar(tmp_path, n=3):
    path = tmp_path / "s.tar"
    write_tar(path, [(f"k{i}", {"txt": f"caption {i}".encode(), "json": b"{}"}) for i in range(n)])
    return path


def test_iter_local_and_pipe_give_the_same_samples(tmp_path):
    path = _tar(tmp_path)
    local = list(iter_samples(str(path)))
    piped = list(iter_samples(f"pipe:cat {path}"))
    assert local == piped
    assert [s["__key__"] for s in local] == ["k0", "k1", "k2"]
    assert local[1]["txt"] == b"caption 1"


def test_truncated_tar_keeps_samples_before_the_fault(tmp_path):
    path = _tar(tmp_path, 4)
    with tarfile.open(path) as tar:
        cut = next(m for m in tar.getmembers() if m.name == "k2.json")
    path.write_bytes(path.read_bytes()[:cut.offset])  # k2.txt complete, k2.json header lost
    *samples, fault = list(iter_samples(str(path)))
    assert [s["__key__"] for s in samples] == ["k0", "k1"]
    assert isinstance(fault, ShardFault) and fault.partial_key == "k2"


def test_failing_pipe_and_missing_file_are_faults(tmp_path):
    (fault,) = list(iter_samples("pipe:exit 3"))
    assert isinstance(fault, ShardFault) and "status 3" in fault.error or "Error" in fault.error
    (fault,) = list(iter_samples(str(tmp_path / "nope.tar")))
    assert isinstance(fault, ShardFault) and "cannot open" in fault.error


def test_empty_tar_yields_nothing(tmp_path):
    path = tmp_path / "e.tar"
    with tarfile.open(path, "w"):
        pass
    assert list(iter_samples(str(path))) == []


def test_gzipped_tar_reads(tmp_path):
    import gzip

    path = _tar(tmp_path)
    gz = tmp_path / "s.tar.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert [s["__key__"] for s in iter_samples(str(gz))] == ["k0", "k1", "k2"]


def test_pipe_shard_ids_take_the_last_tar_token():
    s3 = expand_shards("pipe:aws s3 cp s3://b/shard-{000..002}.tar -")
    assert [s.shard_id for s in s3] == ["shard-000", "shard-001", "shard-002"]
    signed = expand_shards("pipe:curl -s 'https://h/d/s-{0..1}.tar.gz?X-Sig=abc/def' | cat")
    assert [s.shard_id for s in signed] == ["s-0", "s-1"]
    assert [s.shard_id for s in expand_shards("pipe:gsutil cat gs://b/x-{0..1}.tgz")] == ["x-0", "x-1"]


def test_non_utf8_member_names_become_escaped_keys(tmp_path):
    import io

    path = tmp_path / "latin.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for name in ("café.txt", "plain.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    keys = [s["__key__"] for s in iter_samples(str(path))]
    assert keys == ["caf\\xe9", "plain"]
    assert all(k.encode("utf-8") for k in keys)


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.bz2", ".tar.xz"])
def test_compressed_tars_are_read_and_a_cut_one_is_a_fault(tmp_path, suffix):
    import bz2
    import gzip
    import lzma

    plain = _tar(tmp_path, 3).read_bytes()
    pack = {".tar.gz": gzip.compress, ".tar.bz2": bz2.compress, ".tar.xz": lzma.compress}[suffix]
    path = tmp_path / f"c{suffix}"
    path.write_bytes(pack(plain))
    assert [s["__key__"] for s in iter_samples(str(path))] == ["k0", "k1", "k2"]
    path.write_bytes(pack(plain)[: len(pack(plain)) // 2])
    *_, fault = list(iter_samples(str(path)))
    assert isinstance(fault, ShardFault)


def test_a_member_over_the_limit_is_skipped_and_named(tmp_path):
    from pipeline.ingest.shards import SkippedMember

    path = tmp_path / "s.tar"
    write_tar(path, [("a", {"txt": b"x" * 100, "json": b"{}"}), ("b", {"txt": b"short"})])
    a, b = list(iter_samples(str(path), max_member_bytes=50))
    assert isinstance(a["txt"], SkippedMember) and "is 100 bytes, over the member limit of 50" in a["txt"].reason
    assert a["json"] == b"{}" and b["txt"] == b"short"


def test_headers_past_the_budget_are_a_fault_not_an_allocation(tmp_path):
    from tests.hostile import bombs

    path = bombs.write(tmp_path / "pax.tar.gz", bombs.targz_with_pax_header("p", 1 << 30))
    *samples, fault = list(iter_samples(str(path)))
    assert [s["__key__"] for s in samples] == ["p/good-0"]
    assert fault.partial_key == "p/good-1" and "headers take more than 1048576 bytes" in fault.error


def test_garbage_after_the_end_of_archive_is_a_fault(tmp_path):
    path = _tar(tmp_path, 2)
    path.write_bytes(path.read_bytes() + b"hidden sample")
    *samples, fault = list(iter_samples(str(path)))
    assert len(samples) == 2 and "data after the end-of-archive blocks" in fault.error
