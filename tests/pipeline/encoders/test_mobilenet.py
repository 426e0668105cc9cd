"""mobilenet-v2: the real ImageNet weights load into the plain-torch network and classify."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from pipeline.core.manifest import ImageConfig
from pipeline.encoders import mobilenet
from pipeline.encoders.base import EncoderError


@pytest.fixture(scope="module")
def encoder():
    return mobilenet.build("image", ImageConfig(encoder="mobilenet-v2"))


def test_chelsea_is_a_cat(encoder):
    batch = encoder.preprocessor()([Image.fromarray(skimage_data.chelsea())])
    top5 = encoder.classify(batch).topk(5).indices[0].tolist()
    assert set(top5) & set(range(281, 286)), top5  # ImageNet 281-285: the domestic cats
    assert top5[0] in range(281, 286)


def test_pooled_feature_and_metadata(encoder):
    images = [Image.new("RGB", (300, 200), (200, 30, 30)), Image.new("RGB", (64, 500), (20, 20, 220))]
    batch = encoder.preprocessor()(images)
    assert batch["pixels"].shape == (2, 3, 224, 224)
    feats = encoder.encode(batch)
    assert feats.shape == (2, 1280) and encoder.dim == 1280
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # post-ReLU6 average
    assert not torch.allclose(feats[0], feats[1])
    assert encoder.digest() == encoder.digest() and encoder.digest().startswith("sha256:")
    assert encoder.provenance()["crop"] == 224


def test_preprocessing_matches_torchvision_eval_numbers():
    # a 512x256 image: short side -> 256 gives 512x256, centre crop 224 keeps columns 144..367
    arr = np.zeros((256, 512, 3), np.uint8)
    arr[:, 256:] = 255
    x = mobilenet.imagenet_tensor(Image.fromarray(arr))
    assert x.shape == (3, 224, 224)
    left = (0 - 0.485) / 0.229
    right = (1 - 0.485) / 0.229
    assert x[0, 100, 0].item() == pytest.approx(left, abs=1e-5)
    assert x[0, 100, 223].item() == pytest.approx(right, abs=1e-5)


def test_state_dict_keys_match_torchvision_layout():
    keys = set(mobilenet.MobileNetV2().state_dict())
    assert {"features.0.0.weight", "features.1.conv.0.0.weight", "features.18.1.running_var",
            "classifier.1.weight"} <= keys
    assert len([k for k in keys if k.endswith("weight")]) == 105


def test_other_modalities_are_refused():
    with pytest.raises(EncoderError, match="images"):
        mobilenet.build("video", ImageConfig(encoder="mobilenet-v2"))
