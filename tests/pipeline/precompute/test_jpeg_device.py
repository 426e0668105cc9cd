"""Device JPEG decoding (``[modalities.image] decode``), its CPU-testable halves and its GPU check.

The worker half (header checks, raw bytes out) and the main-process half (batch, item retry, Pillow
fallback, status rows) run here with the decoder seam set to Pillow; the nvJPEG decoder itself runs
only in the ``gpu`` test (torchvision does not import on the CPU machines).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import ImageConfig, ManifestError, PrecomputeConfig
from pipeline.core.store import read_status, read_store
from pipeline.encoders.image_prep import PIXELS, CropPreprocessor, resize_crop_on_device
from pipeline.encoders.registry import build_encoder
from pipeline.ingest.decode import DecodeError
from pipeline.ingest.decode.image import decode_image
from pipeline.ingest.decode.jpeg_route import JpegBytes
from pipeline.ingest.shards import Shard
from pipeline.precompute.decode_path import choose_decode
from pipeline.precompute.encoding import Encoding
from pipeline.precompute.jpeg_device import DeviceJpegStep, PillowJpeg
from pipeline.precompute.loader import (
    JpegBatch,
    ModalityBatch,
    ModalityPlan,
    ShardDataset,
    ShardDone,
    ShardWork,
)
from pipeline.precompute.rank import RankLoop
from pipeline.precompute.stats import RankStats
from tests.conftest import write_tar

DEMO = Path(__file__).resolve().parents[3] / "data" / "demo"
PHOTOS = Path(__file__).resolve().parents[2] / "data" / "photos"  # real photos, 604-1280 px


def photo(size=(120, 80), seed=0, fmt="JPEG", **save) -> bytes:
    """A smooth picture (a gradient plus noise), so JPEG keeps it close."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    if save.pop("cmyk", False):
        img = img.convert("CMYK")
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def cut_entropy(data: bytes, keep: float = 0.6) -> bytes:
    """The header intact, the scan cut at ``keep`` of its length: long enough for the worker's
    one-bit-per-block rule, so only decoding finds it (Pillow: "image file is truncated")."""
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
    return data[:start + int((len(data) - start) * keep)]


def count_images(items):
    return {"width": torch.tensor([float(im.size[0]) for im in items])}


def worker_messages(tmp_path: Path, decode: str, members: dict[str, tuple[str, bytes]], max_pixels: int):
    write_tar(tmp_path / f"{decode}.tar", [(k, {ext: data}) for k, (ext, data) in members.items()])
    cfg = ImageConfig(encoder="x", batch_size=16, max_pixels=max_pixels)
    plan = ModalityPlan(cfg, count_images, image_side=32, image_decode=decode)
    seen: list[BaseException] = []
    msgs = list(ShardDataset([ShardWork(Shard(str(tmp_path / f"{decode}.tar"), "s"), ("image",), False)], {"image": plan},
                             lambda e: seen.append(e) or True))
    return msgs, seen


def test_worker_sends_plain_jpegs_as_bytes_and_keeps_todays_statuses_for_the_rest(tmp_path):
    good_a, good_b = photo(seed=1), photo((64, 96), seed=2)
    big = photo((300, 200), seed=3)  # 60,000 pixels, over max_pixels below
    truncated = photo((512, 512), seed=4)[:300]  # under 512*512/512 bytes: the worker's truncation rule
    members = {"a": ("jpg", good_a), "big": ("jpg", big), "cut": ("jpg", truncated), "b": ("jpeg", good_b),
               "png": ("png", photo(fmt="PNG")), "webp": ("webp", photo(fmt="WEBP")),
               "prog": ("jpg", photo(seed=5, progressive=True)), "cmyk": ("jpg", photo(seed=6, cmyk=True))}
    cpu, cpu_seen = worker_messages(tmp_path, "cpu", members, 50_000)
    dev, dev_seen = worker_messages(tmp_path, "device", members, 50_000)
    (jpegs,) = [m for m in dev if isinstance(m, JpegBatch)]
    assert jpegs.keys == ("a", "b")
    assert jpegs.jpegs == (JpegBytes(good_a, "jpg", (120, 80)), JpegBytes(good_b, "jpeg", (64, 96)))
    # everything else was decoded in the worker, as on the CPU path: PNG, WebP, progressive, CMYK
    (rest,) = [m for m in dev if isinstance(m, ModalityBatch)]
    assert rest.keys == ("png", "webp", "prog", "cmyk")
    (cpu_batch,) = [m for m in cpu if isinstance(m, ModalityBatch)]
    assert cpu_batch.keys == ("a", "b", "png", "webp", "prog", "cmyk")
    # the over-limit and the truncated JPEG: the same rows, in the worker, on both paths
    assert dev[-1].status == cpu[-1].status
    assert [(k, s) for k, s, _ in dev[-1].status["image"]] == [("big", "error"), ("cut", "corrupt")]
    assert "exceeds max_pixels=50000" in dev[-1].status["image"][0][2]
    assert [str(e) for e in dev_seen] == [str(e) for e in cpu_seen]


CROP = CropPreprocessor(32, (32, 32), 3)
CFG = ImageConfig(encoder="x")


def test_device_entry_point_falls_back_to_pillow_and_rows_an_undecodable_jpeg(tmp_path):
    good = [photo(seed=7), photo((90, 140), seed=8)]
    bad = cut_entropy(photo((200, 160), seed=9))
    with pytest.raises(DecodeError) as worker_error:  # what the worker path says about it
        decode_image(bad, "jpg", CFG, 32)
    msg = JpegBatch("s", "image", ("g0", "bad", "g1"),
                    (JpegBytes(good[0], "jpg", (120, 80)), JpegBytes(bad, "jpg", (200, 160)),
                     JpegBytes(good[1], "jpg", (90, 140))))
    seen: list[BaseException] = []
    step = DeviceJpegStep(PillowJpeg(CROP, CFG, 32), PillowJpeg(CROP, CFG, 32), torch.device("cpu"))
    keys, batch, rows = step(msg, lambda e: seen.append(e) or True)
    assert keys == ("g0", "g1")
    worker_pixels = CROP([decode_image(g, "jpg", CFG, 32) for g in good])[PIXELS]
    assert torch.equal(batch[PIXELS], worker_pixels)  # the same pixels as the worker path
    assert rows == [("bad", "corrupt", str(worker_error.value))]
    assert str(worker_error.value).startswith("image: cannot decode: OSError: image file is truncated")
    assert [type(e) for e in seen] == [DecodeError]  # handed to the handler once, as in the worker


def test_a_bad_jpeg_on_the_device_path_is_a_status_row_and_the_job_goes_on(tiny_clip, tmp_path):
    cfg = ImageConfig(encoder=f"hf:{tiny_clip}", batch_size=4, decode="cpu")
    enc = Encoding("image", build_encoder("image", cfg), cfg, PrecomputeConfig(device="cpu"), "t", torch.device("cpu"))
    assert isinstance(enc.encoder.preprocessor(), CropPreprocessor)
    side = enc.encoder.input_size
    enc._jpeg_step = DeviceJpegStep(PillowJpeg(enc.encoder.preprocessor(), cfg, side),
                                    PillowJpeg(enc.encoder.preprocessor(), cfg, side), torch.device("cpu"))
    good, bad = photo(seed=10), cut_entropy(photo((200, 160), seed=11))
    layout = OutputLayout(tmp_path / "out")
    loop = RankLoop(layout, {"image": enc}, lambda e: True, RankStats.start(0, "cpu", ["image"]))
    loop.encode(JpegBatch("s", "image", ("g", "bad"), (JpegBytes(good, "jpg", (120, 80)),
                                                      JpegBytes(bad, "jpg", (200, 160)))))
    loop.encode(JpegBatch("s", "image", ("bad2",), (JpegBytes(bad, "jpg", (200, 160)),)))  # nothing left to encode
    loop.finish_shard(ShardDone("s", {"image": [("m", "missing", "image: no jpg member")]}, 4, None, None, 0.0))
    status = read_status(layout.root, "image").to_pydict()
    assert sorted(zip(status["key"], status["status"], strict=True)) == [
        ("bad", "corrupt"), ("bad2", "corrupt"), ("m", "missing")]
    store = read_store(layout.root, "image")
    expected = enc(enc.encoder.preprocessor()([decode_image(good, "jpg", cfg, side)]))[0]
    assert list(store.keys) == ["g"] and np.allclose(np.asarray(store.vectors, np.float32), expected, atol=1e-3)


def test_decode_device_without_cuda_is_a_manifest_error(tiny_clip):
    cfg = ImageConfig(encoder=f"hf:{tiny_clip}", decode="device")
    encoder = build_encoder("image", cfg)
    with pytest.raises(ManifestError, match=r"^modalities\.image\.decode: \"device\" but the image encoder runs on "
                                            r"'cpu'.*decode = \"auto\""):
        Encoding("image", encoder, cfg, PrecomputeConfig(device="cpu"), "t", torch.device("cpu"))
    assert choose_decode("auto", torch.device("cpu"), encoder) == "cpu"  # auto keeps the CPU path
    enc = Encoding("image", encoder, ImageConfig(encoder=cfg.encoder), PrecomputeConfig(device="cpu"), "t",
                   torch.device("cpu"))
    assert enc.decode == "cpu" and enc.plan().image_decode == "cpu"
    assert enc.metadata["preprocessing"]["decode_path"] == "cpu"


# ----------------------------------------------------------------------------- geometry and the GPU


def demo_jpegs(limit: int = 48) -> list[bytes]:
    """The real photos in tests/data/photos, then the demo shards' stamp JPEGs (up to 256 px)."""
    out = [p.read_bytes() for p in sorted(PHOTOS.glob("*.jpg"))]
    for tar in sorted(DEMO.glob("demo-*.tar")):
        with tarfile.open(tar) as t:
            out += [t.extractfile(m).read() for m in t.getmembers() if m.name.endswith(".jpg")]
    return out[:limit]


def full_decode_on_torch(crop: CropPreprocessor, device: torch.device):
    """The device path's geometry with libjpeg standing in for nvJPEG: a full decode, then torch's resize."""
    def decode(items):
        full = [torch.from_numpy(np.asarray(decode_image(it.data, it.ext, CFG, 0)).transpose(2, 0, 1).copy())
                for it in items]
        return torch.cat([resize_crop_on_device(f.unsqueeze(0).to(device), crop) for f in full])
    return decode


def compare_paths(decoder, device: torch.device, side: int = 224) -> tuple[float, float, float]:
    """``decoder`` against Pillow, on the real and demo photos at a real encoder size: (the worst image's
    mean abs pixel difference from Pillow's full decode + resize, the same from the worker path, which
    draft-decodes, and the least cosine of a tiny CLIP's embeddings against the worker path)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    crop = CropPreprocessor(side, (side, side), 3)  # CLIP's: bicubic, shortest edge = crop
    items = [JpegBytes(j, "jpg", (0, 0)) for j in demo_jpegs()]
    assert len(items) >= 16, f"{PHOTOS} and the demo shards under {DEMO} hold the test's photos"
    worker = PillowJpeg(crop, CFG, side)(items).to(device)
    full = PillowJpeg(crop, CFG, 0)(items).to(device)
    other = decoder(items).to(device)
    worst = [float((ref.float() - other.float()).abs().mean(dim=(1, 2, 3)).max()) for ref in (full, worker)]
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(image_size=side, patch_size=32, hidden_size=32,
                                                           intermediate_size=37, num_hidden_layers=2,
                                                           num_attention_heads=2, projection_dim=16)).to(device).eval()
    mean = torch.tensor([0.4815, 0.4578, 0.4082], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.2686, 0.2613, 0.2758], device=device).view(1, 3, 1, 1)
    with torch.inference_mode():
        a, b = (model(pixel_values=(x.float() / 255 - mean) / std).image_embeds for x in (worker, other))
    return worst[0], worst[1], float(torch.nn.functional.cosine_similarity(a, b).min())


# Measured on the CPU at 224 (libjpeg standing in for nvJPEG): against Pillow's full decode the worst
# photo is 0.15 levels off on average (torch's antialiased bicubic vs Pillow's); against the worker,
# 3.4 (mossy bark: the worker's draft decode scales in the DCT domain, the device decodes in full);
# least cosine 0.99992. The bounds leave a level for nvJPEG's IDCT, which is not libjpeg's.
FULL_LEVELS, WORKER_LEVELS, MIN_COSINE = 1.0, 4.5, 0.999


def test_the_device_geometry_matches_pillow_within_a_level():
    decoder = full_decode_on_torch(CropPreprocessor(224, (224, 224), 3), torch.device("cpu"))
    full, worker, cos = compare_paths(decoder, torch.device("cpu"))
    assert full <= FULL_LEVELS and worker <= WORKER_LEVELS and cos >= MIN_COSINE, (full, worker, cos)


@pytest.mark.gpu
def test_nvjpeg_batched_decode_matches_the_pillow_path_on_real_photos():
    from pipeline.precompute.jpeg_device import TorchvisionJpeg

    cuda = torch.device("cuda")
    full, worker, cos = compare_paths(TorchvisionJpeg(CropPreprocessor(224, (224, 224), 3), cuda), cuda)
    print(f"nvJPEG vs Pillow: worst mean abs diff {full:.3f} (full decode), {worker:.3f} (worker), cosine {cos:.5f}")
    assert full <= FULL_LEVELS and worker <= WORKER_LEVELS and cos >= MIN_COSINE, (full, worker, cos)


def test_device_decodes_are_grouped_by_a_pixel_budget():
    """Groups keep the batch order and hold at most the budget's pixels; an image over it stands alone."""
    from pipeline.ingest.decode.jpeg_route import JpegBytes
    from pipeline.precompute.jpeg_device import pixel_groups

    sizes = [(100, 100), (50, 100), (200, 100), (10, 10), (300, 300), (1, 1)]
    items = [JpegBytes(b"", "jpg", s) for s in sizes]
    groups = pixel_groups(items, budget=20_000)
    assert [it for g in groups for it in g] == items
    assert [[it.size for it in g] for g in groups] == [[(100, 100), (50, 100)], [(200, 100)], [(10, 10)],
                                                        [(300, 300)], [(1, 1)]]
    assert all(sum(w * h for w, h in (it.size for it in g)) <= 20_000 for g in groups if len(g) > 1)
