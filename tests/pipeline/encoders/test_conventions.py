"""A modality's output convention (normalize, scale) against the formula, and what it records."""

import numpy as np
import torch

from pipeline.core.manifest import AudioConfig, PointsConfig
from pipeline.encoders.conventions import OutputConvention, expected_norm


def test_unit_times_scale_and_raw():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    x[3] = 0.0
    x[4, 2] = np.nan
    scaled, ok = OutputConvention(True, 20.0).apply(torch.from_numpy(x))
    want = 20.0 * x[:3] / np.linalg.norm(x[:3], axis=1, keepdims=True)
    assert np.allclose(scaled.numpy()[:3], want, atol=1e-5)
    assert ok.tolist() == [True, True, True, False, False]
    raw, ok_raw = OutputConvention(False, 1.0).apply(torch.from_numpy(x))
    assert np.array_equal(raw.numpy()[:3], x[:3]) and ok_raw.tolist() == ok.tolist()


def test_convention_of_a_section_and_its_metadata():
    audio = OutputConvention.of(AudioConfig(encoder="x", scale=20.0))
    points = OutputConvention.of(PointsConfig(encoder="x", normalize=False))
    assert audio.metadata() == {"normalized": True, "scale": 20.0}
    assert points.metadata() == {"normalized": False, "scale": 1.0}
    assert expected_norm(audio.metadata()) == 20.0 and expected_norm(points.metadata()) is None
    assert expected_norm({"normalized": True}) == 1.0  # a store written before the keys existed
