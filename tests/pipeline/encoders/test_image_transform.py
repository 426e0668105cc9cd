"""The torchvision-free eval transform against a NumPy reference of torchvision's arithmetic."""

import numpy as np
import pytest
from PIL import Image

from pipeline.encoders.image_transform import ImageTransform, shortest_side_size

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def reference(img: Image.Image, size: int, mode: str, resample) -> np.ndarray:
    """torchvision on a PIL image: Resize = PIL resize to the computed size, CenterCrop = slicing."""
    w, h = img.size
    if mode == "squash":
        out = np.asarray(img.resize((size, size), resample), np.float64)
    else:
        if w <= h:
            nw, nh = size, int(size * h / w)
        else:
            nw, nh = int(size * w / h), size
        big = np.asarray(img.resize((nw, nh), resample), np.float64)
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
        out = big[top:top + size, left:left + size]
    return ((out / 255.0 - np.array(MEAN)) / np.array(STD)).transpose(2, 0, 1)


@pytest.mark.parametrize("mode,interp,shape", [("shortest", "bicubic", (53, 71)), ("shortest", "bilinear", (90, 40)),
                                               ("squash", "bicubic", (33, 61))])
def test_matches_the_reference(mode, interp, shape):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    t = ImageTransform(32, MEAN, STD, mode, interp)
    got = t(img).numpy()
    want = reference(img, 32, mode, Image.BICUBIC if interp == "bicubic" else Image.BILINEAR)
    assert got.shape == (3, 32, 32)
    assert np.allclose(got, want, atol=1e-5)


def test_shortest_side_size_is_torchvisions_formula():
    assert shortest_side_size(640, 480, 224) == (298, 224)  # int(224 * 640 / 480) = 298
    assert shortest_side_size(100, 337, 336) == (336, 1132)


def test_unsupported_modes_are_refused():
    with pytest.raises(ValueError, match="resize mode"):
        ImageTransform(32, MEAN, STD, "longest")
