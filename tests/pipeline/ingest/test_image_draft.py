"""JPEG draft decoding against a full decode, on real photos, at the encoder-input level.

Draft mode scales in the DCT domain (a box-like low-pass) before the preprocessor's own resize,
so the encoder input is not bit-identical. The tolerance, and why:

* pixels: PSNR >= 30 dB between the two encoder inputs (the usual visually-lossless threshold;
  the 8 photos here give 33-53 dB at 224 px), and pixel-exact where no draft applies (a short
  side under twice the target);
* embeddings of the real MobileNetV2 weights: cosine >= 0.98 for every photo and >= 0.995 on
  average (measured 0.989-1.000), far above the cosine between two different photos, and each
  draft embedding is nearest to its own photo's full-decode embedding.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.core.manifest import ImageConfig
from pipeline.encoders.image_prep import CropPreprocessor, Normalize, split_processor
from pipeline.ingest.decode import decode_member

PHOTOS = sorted((Path(__file__).resolve().parents[2] / "data" / "photos").glob("*.jpg"))
CFG = ImageConfig(encoder="x")


def decode(data: bytes, side: int, ext: str = "jpg") -> Image.Image:
    return decode_member({"__key__": "k", ext: data}, "image", CFG, image_side=side)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.mark.parametrize("side", [224, 336])
def test_draft_keeps_the_short_side_and_the_encoder_input_close(side):
    assert len(PHOTOS) == 8
    pre = CropPreprocessor(side, (side, side), Image.Resampling.BICUBIC)
    for path in PHOTOS:
        data = path.read_bytes()
        full, draft = decode(data, 0), decode(data, side)
        assert min(draft.size) >= side  # never below what the resize needs
        scale = full.size[0] / draft.size[0]
        assert scale == (2 if min(full.size) >= 2 * side else 1)  # the photos here allow 1/2 at most
        a, b = pre.one(full), pre.one(draft)
        if scale == 1:
            np.testing.assert_array_equal(a, b)
        else:
            assert psnr(a, b) >= 30, path.name


def test_draft_embeddings_match_full_decode_with_the_real_mobilenet():
    from pipeline.encoders.mobilenet import MobileNetV2Encoder

    enc = MobileNetV2Encoder()
    data = [p.read_bytes() for p in PHOTOS]
    with torch.no_grad():
        full = F.normalize(enc.features([decode(d, 0) for d in data]), dim=-1)
        draft = F.normalize(enc.features([decode(d, enc.input_size) for d in data]), dim=-1)
    cos = (full * draft).sum(-1)
    assert cos.min() >= 0.98 and cos.mean() >= 0.995, cos.tolist()
    assert torch.equal((draft @ full.T).argmax(dim=1), torch.arange(len(data)))  # retrieval unchanged


def test_png_and_small_jpegs_decode_in_full():
    img = Image.open(PHOTOS[0]).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    assert decode(buf.getvalue(), 224, "png").size == img.size
    small = io.BytesIO()
    img.resize((300, 200)).save(small, "JPEG")
    assert decode(small.getvalue(), 224).size == (300, 200)


def test_split_clip_preprocessing_equals_transformers_processor():
    from transformers import CLIPImageProcessor

    for side in (224, 336):
        proc = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        crop, norm = split_processor(proc)
        images = [decode(p.read_bytes(), side) for p in PHOTOS] + [Image.new("RGB", (40, 30), (9, 200, 40))]
        ours = norm(crop(images))["pixel_values"]
        ref = proc(images=images, return_tensors="pt")["pixel_values"]
        std = torch.tensor(proc.image_std).view(1, 3, 1, 1)
        levels = ((ours - ref) * std * 255).abs()  # back in 0-255 pixel levels
        assert ours.shape == ref.shape and levels.max() <= 3.01 and levels.mean() <= 0.1, (levels.max(), levels.mean())
    # a processor that caps the long edge, or is no CLIP-style processor at all, is left whole
    assert split_processor(CLIPImageProcessor(size={"shortest_edge": 224, "longest_edge": 300})) is None
    assert split_processor(object()) is None
    pixels = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(Normalize(1 / 255, (0.5,) * 3, (0.25,) * 3)({"pixels_uint8": pixels})["pixel_values"],
                          torch.full((1, 3, 2, 2), 2.0))
