"""The worker side on its own: typed messages, and the bad-sample handler it is given."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.manifest import AudioConfig, ImageConfig, PrecomputeConfig
from pipeline.ingest.decode import DecodeError
from pipeline.ingest.shards import Shard
from pipeline.precompute.handlers import HANDLERS, keep_going, record_and_continue, reraise_exception
from pipeline.precompute.loader import ModalityBatch, ModalityPlan, ShardDataset, ShardDone, ShardWork


def count_images(items):
    """A preprocessor: one row per decoded image, its width."""
    return {"width": torch.tensor([float(im.size[0]) for im in items])}


def shard_one(tiny_shards) -> ShardWork:
    url = tiny_shards["pattern"].replace("{000000..000003}", "000001")
    return ShardWork(Shard(url, "shard-000001"), ("image",), True)


def plans(batch_size: int = 2) -> dict[str, ModalityPlan]:
    return {"image": ModalityPlan(ImageConfig(encoder="x", batch_size=batch_size), count_images)}


def test_messages_are_batches_then_one_shard_done(tiny_shards):
    seen: list[BaseException] = []

    def recording(exn):
        seen.append(exn)
        return True

    msgs = list(ShardDataset([shard_one(tiny_shards)], plans(), recording))
    *batches, done = msgs
    assert all(isinstance(b, ModalityBatch) for b in batches) and isinstance(done, ShardDone)
    # shard 1: s1-001's jpeg is cut (corrupt); the other four decode, in batches of two
    assert [b.keys for b in batches] == [("s1-000", "s1-002"), ("s1-003", "s1-004")]
    assert all(b.batch["width"].tolist() == [40.0, 40.0] for b in batches)
    assert [(k, s) for k, s, _ in done.status["image"]] == [("s1-001", "corrupt")]
    assert [type(e) for e in seen] == [DecodeError]  # the handler saw the bad member, once
    assert done.samples == 5 and done.fault is None and not done.unread
    assert [k for k, *_ in done.metadata] == [f"s1-00{i}" for i in range(5)]
    assert 0 <= done.read_s
    with pytest.raises(AttributeError):
        done.shard = "other"  # frozen


def test_a_handler_that_says_stop_ends_the_shard(tiny_shards):
    with pytest.raises(DecodeError, match="image"):
        list(ShardDataset([shard_one(tiny_shards)], plans(), lambda exn: False))
    with pytest.raises(DecodeError, match="image"):
        list(ShardDataset([shard_one(tiny_shards)], plans(), reraise_exception))


def test_a_missing_member_is_never_handed_to_the_handler(tiny_shards):
    url = tiny_shards["pattern"].replace("{000000..000003}", "000000")  # s0-005 has no wav
    work = ShardWork(Shard(url, "shard-000000"), ("audio",), False)
    plan = {"audio": ModalityPlan(AudioConfig(encoder="x", batch_size=8), lambda items: {"n": torch.zeros(len(items))},
                                  16000)}
    *_, done = ShardDataset([work], plan, reraise_exception)
    assert [(k, s) for k, s, _ in done.status["audio"]] == [("s0-005", "missing")] and done.metadata is None


def test_a_rejected_item_is_an_error_row_and_the_rest_of_its_batch_is_kept(tiny_shards):
    import io

    import numpy as np
    from PIL import Image

    from tests.conftest import jpeg_bytes

    bad_pixel = np.asarray(Image.open(io.BytesIO(jpeg_bytes(14))))[0, 0].tolist()  # s1-002's image

    def picky(items):
        if any(np.asarray(im)[0, 0].tolist() == bad_pixel for im in items):
            raise ValueError("not this one")
        return count_images(items)

    plan = {"image": ModalityPlan(ImageConfig(encoder="x", batch_size=2), picky)}
    *batches, done = ShardDataset([shard_one(tiny_shards)], plan, record_and_continue)
    # the batch (s1-000, s1-002) fails whole; item by item, only s1-002 is refused
    assert [b.keys for b in batches] == [("s1-000",), ("s1-003", "s1-004")]
    assert done.status["image"][1] == ("s1-002", "error", "preprocess: ValueError: not this one")
    with pytest.raises(ValueError, match="not this one"):  # the handler is asked about the batch too
        list(ShardDataset([shard_one(tiny_shards)], plan, lambda exn: isinstance(exn, DecodeError)))


def test_handlers_follow_webdataset():
    exn = ValueError("bad")
    assert record_and_continue(exn) is True
    with pytest.raises(ValueError) as got:
        reraise_exception(exn)
    assert got.value is exn
    keep_going(record_and_continue, exn)  # returns
    with pytest.raises(ValueError) as got:
        keep_going(lambda e: False, exn)
    assert got.value is exn
    assert set(HANDLERS) == set(PrecomputeConfig.CHOICES["handler"])


def test_no_policy_name_is_compared_below_the_entry():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "pipeline"
    compared = re.compile(r"handler\s*[!=]=|[!=]=\s*[\"'](raise|record)[\"']")
    bad = [f"{p}:{n}" for p in root.rglob("*.py") for n, line in enumerate(p.read_text().splitlines(), 1)
           if compared.search(line)]
    assert not bad, bad


def test_the_dataloader_pins_a_batch_message(monkeypatch):
    """On CUDA the DataLoader pins what a worker yields; a dataclass message pins its tensors itself."""
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned = []

    def fake_pin(self, *args, **kwargs):  # no CUDA here: record the call, return a copy
        pinned.append(self)
        return self.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    msg = ModalityBatch("s", "image", ("a", "b"), {"x": torch.arange(2.0), "note": "kept"})
    out = pin_memory(msg)
    assert isinstance(out, ModalityBatch) and out.keys == msg.keys and out.batch["note"] == "kept"
    assert len(pinned) == 1 and pinned[0] is msg.batch["x"] and out.batch["x"] is not msg.batch["x"]
    assert out.batch["x"].tolist() == [0.0, 1.0]
    done = ShardDone("s", {}, 0, None, None, 0.0)
    assert pin_memory(done) is done  # nothing to pin


def test_metadata_records_each_members_sha256(tiny_shards):
    """The third metadata field is ``{modality: sha256}`` of the member each modality reads, equal to
    hashlib over the tar's bytes (each sample of this shard holds jpg, txt, mp4, wav, npy and json)."""
    import hashlib
    import json
    import tarfile

    work = shard_one(tiny_shards)
    *_, done = list(ShardDataset([work], plans()))
    want: dict[str, dict[str, str]] = {}
    with tarfile.open(work.shard.url) as tar:
        for member in tar.getmembers():
            key, _, ext = member.name.partition(".")
            modality = {"jpg": "image", "txt": "text", "mp4": "video", "wav": "audio", "npy": "points"}.get(ext)
            if modality:
                want.setdefault(key, {})[modality] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    got = {k: json.loads(h) for k, _, h in done.metadata}
    assert got == want and all(set(v) == {"image", "text", "video", "audio", "points"} for v in got.values())
