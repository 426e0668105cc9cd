"""Depth views drawn batched in torch against the worker's NumPy renderer, on real demo clouds."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import torch

from pipeline.core.manifest import PointsConfig
from pipeline.encoders.depth_render import CloudCollate, DeviceRender, render_views, renders_on_device
from pipeline.encoders.image_prep import CropPreprocessor, Normalize
from pipeline.encoders.wrappers import COUNTS, RENDER_SIZE, DepthViewsPreprocessor, render_depth
from pipeline.ingest.decode import decode_member

DEMO = Path(__file__).resolve().parents[3] / "data" / "demo"


def demo_clouds(count: int = 6) -> list[np.ndarray]:
    out = []
    with tarfile.open(DEMO / "demo-000000.tar") as tar:
        for m in tar.getmembers():
            if m.name.endswith(".npy") and len(out) < count:
                sample = {"__key__": m.name[:-4], "npy": tar.extractfile(m).read()}
                out.append(decode_member(sample, "points", PointsConfig(encoder="x", points=2048)))
    assert len(out) == count
    return out


def test_device_views_equal_the_numpy_renderer():
    clouds = demo_clouds()
    ours = render_views(torch.from_numpy(np.stack([c[:, :3] for c in clouds])), 6, RENDER_SIZE).numpy()
    ref = np.stack([np.asarray(img).transpose(2, 0, 1) for c in clouds for img in render_depth(c, 6)])
    assert ours.shape == ref.shape == (36, 3, RENDER_SIZE, RENDER_SIZE)
    # float32 rotations in torch and NumPy may round a point into the neighbouring pixel: a handful
    same = (ours == ref).mean()
    assert same >= 0.9995, same
    assert (ours > 0).sum() >= 0.99 * (ref > 0).sum()


def test_the_points_batch_through_the_device_matches_the_worker_path():
    crop, norm = CropPreprocessor(RENDER_SIZE, (RENDER_SIZE, RENDER_SIZE), 3), Normalize(1 / 255, (0.5,) * 3, (0.5,) * 3)
    assert renders_on_device(crop, RENDER_SIZE) and not renders_on_device(CropPreprocessor(256, (224, 224), 2), 224)
    clouds = demo_clouds(3)
    device = norm(DeviceRender(4, RENDER_SIZE)(CloudCollate(4, COUNTS)(clouds)))
    worker = norm(DepthViewsPreprocessor(crop, 4)(clouds))
    assert device[COUNTS].tolist() == worker[COUNTS].tolist() == [4, 4, 4]
    close = torch.isclose(device["pixel_values"], worker["pixel_values"], atol=1e-6).float().mean()
    assert close >= 0.9995
