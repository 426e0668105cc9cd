"""pointnet2's CUDA ops on the CPU: furthest point sampling (ebind's own fallback) and ball query
(bindery's) against NumPy transcriptions of sampling_gpu.cu and ball_query_gpu.cu."""

import numpy as np
import torch

from pipeline.encoders.ebind.pointnet2 import ball_query
from pipeline.encoders.thirdparty import ebind_module


def numpy_fps(xyz: np.ndarray, m: int) -> np.ndarray:
    """sampling_gpu.cu, one batch item: start at 0, temp = 1e10, skip |p|^2 <= 1e-3, first max wins."""
    temp = np.full(len(xyz), 1e10)
    out, old = [0], 0
    for _ in range(1, m):
        best, besti = -1.0, 0
        for k, p in enumerate(xyz):
            if (p * p).sum() <= 1e-3:
                continue
            d = min(((p - xyz[old]) ** 2).sum(), temp[k])
            temp[k] = d
            if d > best:
                best, besti = d, k
        old = besti
        out.append(old)
    return np.array(out)


def numpy_ball_query(radius, nsample, xyz, centres):
    out = np.zeros((len(centres), nsample), np.int64)
    for j, c in enumerate(centres):
        cnt = 0
        for k, p in enumerate(xyz):
            if cnt >= nsample:
                break
            if ((c - p) ** 2).sum() < radius * radius:
                if cnt == 0:
                    out[j, :] = k
                out[j, cnt] = k
                cnt += 1
    return out


def test_furthest_point_sampling_matches_the_kernel():
    utils = ebind_module("models.uni3d.pointnet2_ops.pointnet2_utils")
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-1, 1, (2, 300, 3)).astype(np.float32)
    xyz[0, 5] = 0.0  # a point at the origin is never picked (the kernel skips |p|^2 <= 1e-3)
    got = utils.furthest_point_sample(torch.from_numpy(xyz), 32).numpy()
    for b in range(2):
        assert np.array_equal(got[b], numpy_fps(xyz[b].astype(np.float64), 32))
    assert 5 not in got[0]


def test_ball_query_matches_the_kernel():
    rng = np.random.default_rng(1)
    xyz = rng.uniform(-1, 1, (2, 200, 3)).astype(np.float32)
    centres = np.concatenate([xyz[:, :6], np.full((2, 1, 3), 5.0, np.float32)], axis=1)  # one far centre: none found
    got = ball_query(0.3, 8, torch.from_numpy(xyz), torch.from_numpy(centres))
    assert got.dtype == torch.int32 and got.shape == (2, 7, 8)
    for b in range(2):
        assert np.array_equal(got[b].numpy(), numpy_ball_query(0.3, 8, xyz[b], centres[b]))
    assert (got[:, -1] == 0).all()
