from __future__ import annotations

import numpy as np
import torch

from pipeline.core.manifest import ImageConfig, PointsConfig, TextConfig, VideoConfig
from pipeline.encoders.base import Encoder, EncoderError
from pipeline.encoders.hf import build
from pipeline.encoders.wrappers import PooledImageEncoder, adapt, render_depth


def test_video_is_the_mean_of_unnormalised_frame_features(tiny_clip):
    enc = adapt("video", VideoConfig(encoder=f"hf:{tiny_clip}", frames=3), build)
    assert isinstance(enc, PooledImageEncoder) and enc.modality == "video" and enc.dim == 16
    rng = np.random.default_rng(0)
    clips = [(rng.random((3, 32, 32, 3)) * 255).astype(np.uint8) for _ in range(2)]
    with torch.no_grad():
        pooled = enc.features(clips)
        image = build("image", ImageConfig(encoder=f"hf:{tiny_clip}"))
        from PIL import Image

        frames = image.features([Image.fromarray(f) for f in clips[1]])
    torch.testing.assert_close(pooled[1], frames.mean(0), atol=1e-5, rtol=1e-5)


def test_depth_renders_are_views_of_the_cloud():
    pts = np.random.default_rng(0).standard_normal((500, 3)).astype(np.float32)
    pts /= np.linalg.norm(pts, axis=1).max()
    views = render_depth(pts, 4, size=64)
    arrays = [np.asarray(v) for v in views]
    assert len(views) == 4 and arrays[0].shape == (64, 64, 3)
    assert (arrays[0][..., 0] == arrays[0][..., 2]).all()  # a depth map replicated to 3 channels
    assert 50 < (arrays[0][..., 0] > 0).sum() <= 500  # one pixel per visible point at most
    assert not np.array_equal(arrays[0], arrays[1])  # turned views differ


def test_points_fall_back_to_depth_views(tiny_clip):
    enc = adapt("points", PointsConfig(encoder=f"hf:{tiny_clip}", views=3), build)
    assert enc.modality == "points" and enc.provenance()["views"] == 3
    cloud = np.random.default_rng(1).standard_normal((200, 3)).astype(np.float32) / 4
    batch = enc.prepare(enc.preprocessor()([cloud, cloud[::-1].copy()]))
    assert batch["pixel_values"].shape[0] == 6
    with torch.no_grad():
        out = enc.encode(batch)
    torch.testing.assert_close(out[0], out[1], atol=1e-5, rtol=1e-5)  # point order does not matter


class NativePoints(Encoder):
    modality, name, dim = "points", "native", 3

    def preprocessor(self):
        return lambda items: {"x": torch.tensor(np.stack([i[:, :3].mean(0) for i in items]))}

    def encode(self, batch):
        return batch["x"]

    def modules(self):
        return []


def test_a_factory_that_serves_points_is_used_as_is():
    def factory(modality, config):
        if modality == "points":
            return NativePoints()
        raise EncoderError("no")

    assert isinstance(adapt("points", PointsConfig(encoder="x"), factory), NativePoints)


def test_adapt_rejects_a_factory_that_gives_the_wrong_modality(tiny_clip):
    import pytest

    def factory(modality, config):
        return build("image", ImageConfig(encoder=f"hf:{tiny_clip}"))

    with pytest.raises(EncoderError, match="gave a image encoder"):
        adapt("text", TextConfig(encoder="x"), factory)
