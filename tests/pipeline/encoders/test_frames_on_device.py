"""Video frames resized and cropped on the device against the worker's Pillow resize, on real clips."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.core.manifest import VideoConfig
from pipeline.encoders.image_prep import FRAMES, PIXELS, CropPreprocessor, resize_crop_on_device
from pipeline.encoders.wrappers import COUNTS, DeviceFrames, FramesPreprocessor
from pipeline.ingest.decode import decode_member

DEMO = Path(__file__).resolve().parents[3] / "data" / "demo"


def clips() -> list[np.ndarray]:
    """Three demo clips (128 px, upscaled) and a 320x240 pan (downscaled), decoded by the pipeline."""
    from bench.precompute_data import pan_mp4

    out = []
    with tarfile.open(DEMO / "demo-000000.tar") as tar:
        for m in tar.getmembers():
            if m.name.endswith(".mp4") and len(out) < 3:
                out.append(decode_member({"__key__": "k", "mp4": tar.extractfile(m).read()}, "video",
                                         VideoConfig(encoder="x")))
    pan = pan_mp4(np.random.default_rng(0), width=320, height=240, frames=24)
    return out + [decode_member({"__key__": "p", "mp4": pan}, "video", VideoConfig(encoder="x"))]


@pytest.mark.parametrize("side,resample", [(224, Image.Resampling.BICUBIC), (336, Image.Resampling.BICUBIC),
                                           (224, Image.Resampling.BILINEAR)])
def test_device_resize_is_within_a_level_of_pillow_on_average(side, resample):
    """torch's antialiased filters follow Pillow's; they differ by rounding, and at sharp edges
    bicubic overshoot is clipped a little differently: mean under 0.25 levels, 99th percentile <= 2."""
    crop = CropPreprocessor(side, (side, side), int(resample))
    for clip in clips():
        ref = np.stack([crop.one(Image.fromarray(f)) for f in clip]).astype(int)
        got = resize_crop_on_device(torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous(), crop).numpy().astype(int)
        diff = np.abs(ref - got)
        assert got.shape == ref.shape and diff.mean() < 0.25 and np.percentile(diff, 99) <= 2, (diff.mean(), diff.max())


def test_frames_go_raw_to_the_device_only_when_they_share_a_size():
    crop = CropPreprocessor(224, (224, 224), int(Image.Resampling.BICUBIC))
    pre, step = FramesPreprocessor(crop), DeviceFrames(crop)
    same = [np.zeros((2, 60, 80, 3), np.uint8), np.full((2, 60, 80, 3), 200, np.uint8)]
    batch = pre(same)
    assert batch[FRAMES].shape == (4, 3, 60, 80) and batch[COUNTS].tolist() == [2, 2]
    assert step(batch)[PIXELS].shape == (4, 3, 224, 224)
    mixed = pre([np.zeros((2, 60, 80, 3), np.uint8), np.zeros((3, 40, 40, 3), np.uint8)])
    assert FRAMES not in mixed and mixed[PIXELS].shape == (5, 3, 224, 224) and step(mixed) is mixed
