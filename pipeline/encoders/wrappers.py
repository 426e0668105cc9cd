"""Serve video and points through an image encoder (the offline recipe, EBind-style pooling).

* video  -- the clip's sampled frames through the image encoder; the clip's feature is the
  mean of its unnormalised frame features (the runner L2-normalises it).
* points -- the cloud rendered to ``views`` orthographic depth images (rotated about the
  vertical axis, z-buffered, replicated to 3 channels) through the image encoder, mean-pooled.

:func:`adapt` asks the factory for the modality first; when the factory cannot serve it
(raises :class:`EncoderError`, or hands back an image encoder) the image encoder is wrapped.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from pipeline.encoders.base import Batch, Encoder, EncoderError
from pipeline.encoders.depth_render import CloudCollate, DeviceRender, renders_on_device
from pipeline.encoders.image_prep import (
    FRAMES,
    PIXELS,
    TORCH_FILTERS,
    CropPreprocessor,
    resize_crop_on_device,
)

log = logging.getLogger(__name__)

RENDER_SIZE = 224  # side of a rendered depth image (the image preprocessor resizes it anyway)
COUNTS = "_items_per_sample"  # batch entry: images per sample, for the pooling


def _pool(features: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean of consecutive groups of rows; group i has counts[i] rows."""
    ids = torch.repeat_interleave(torch.arange(len(counts), device=features.device), counts.to(features.device))
    out = torch.zeros(len(counts), features.shape[1], dtype=features.dtype, device=features.device)
    out.index_add_(0, ids, features)
    return out / counts.to(features.device, features.dtype).unsqueeze(1)


def render_depth(points: np.ndarray, views: int, size: int = RENDER_SIZE) -> list:
    """``views`` depth images (PIL RGB, near = bright) of a unit-sphere cloud, turned about y."""
    from PIL import Image

    xyz = np.asarray(points, dtype=np.float32)[:, :3]
    images = []
    for v in range(views):
        a = 2 * math.pi * v / views
        rot = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], np.float32)
        p = xyz @ rot.T
        col = np.clip(((p[:, 0] + 1) / 2 * (size - 1)).round().astype(np.int64), 0, size - 1)
        row = np.clip(((1 - p[:, 1]) / 2 * (size - 1)).round().astype(np.int64), 0, size - 1)
        near = np.clip((p[:, 2] + 1) / 2, 0, 1)  # z toward the viewer -> 1
        depth = np.zeros(size * size, dtype=np.float32)
        np.maximum.at(depth, row * size + col, 0.2 + 0.8 * near)  # z-buffer: the nearest point wins
        img = (depth.reshape(size, size) * 255).astype(np.uint8)
        images.append(Image.fromarray(np.repeat(img[:, :, None], 3, axis=2), "RGB"))
    return images


class FramesPreprocessor:
    """Worker side of video: the frames through the image preprocessor; or, when that is a
    :class:`CropPreprocessor` and the batch's frames share one size, the raw uint8 frames, to be
    resized and cropped on the device (:class:`DeviceFrames`)."""

    def __init__(self, image_pre: Any):
        self.image_pre = image_pre

    def __call__(self, clips: list[np.ndarray]) -> Batch:
        from PIL import Image

        counts = torch.tensor([len(c) for c in clips], dtype=torch.long)
        if (isinstance(self.image_pre, CropPreprocessor) and self.image_pre.resample in TORCH_FILTERS
                and len({c.shape[1:] for c in clips}) == 1):
            frames = torch.from_numpy(np.concatenate(clips)).permute(0, 3, 1, 2).contiguous()
            return {FRAMES: frames, COUNTS: counts}
        batch = dict(self.image_pre([Image.fromarray(f) for clip in clips for f in clip]))
        batch[COUNTS] = counts
        return batch


class DeviceFrames:
    """Device side of video: raw frames -> the image preprocessor's resize and crop, as uint8 pixels."""

    def __init__(self, crop: CropPreprocessor):
        self.crop = crop

    def __call__(self, batch: Batch) -> Batch:
        if FRAMES not in batch:
            return batch
        rest = {k: v for k, v in batch.items() if k != FRAMES}
        return {**rest, PIXELS: resize_crop_on_device(batch[FRAMES], self.crop)}


class DepthViewsPreprocessor:
    def __init__(self, image_pre: Any, views: int):
        self.image_pre, self.views = image_pre, views

    def __call__(self, clouds: list[np.ndarray]) -> Batch:
        images = [img for cloud in clouds for img in render_depth(cloud, self.views)]
        batch = dict(self.image_pre(images))
        batch[COUNTS] = torch.full((len(clouds),), self.views, dtype=torch.long)
        return batch


class PooledImageEncoder(Encoder):
    """An image encoder over several images per sample (frames or views), mean-pooled."""

    def __init__(self, modality: str, image: Encoder, preprocess: Any, info: dict[str, Any], before: Any = None):
        self.modality, self.image, self._pre, self.info = modality, image, preprocess, info
        self.name, self.dim, self._before = image.name, image.dim, before  # before: a device step (rendering)

    def preprocessor(self):
        return self._pre

    def prepare(self, batch: Batch) -> Batch:
        if self._before is not None:
            batch = self._before(batch)
        rest = self.image.prepare({k: v for k, v in batch.items() if k != COUNTS})
        return {**rest, COUNTS: batch[COUNTS]}

    def encode(self, batch: Batch) -> torch.Tensor:
        counts = batch[COUNTS]
        feats = self.image.encode({k: v for k, v in batch.items() if k != COUNTS})
        return _pool(feats.float(), counts)

    def modules(self) -> list[torch.nn.Module]:
        return self.image.modules()

    def provenance(self) -> dict[str, Any]:
        return {**self.image.provenance(), **self.info}


def _image_config(config: Any) -> Any:
    """The image-tower view of a video/points section (only the shared keys matter to factories)."""
    from pipeline.core.manifest import ImageConfig

    return ImageConfig(encoder=config.encoder, batch_size=config.batch_size, dtype=config.dtype, weights=config.weights)


def adapt(modality: str, config: Any, factory: Any) -> Encoder:
    """The factory's encoder for ``modality``; video and points fall back to its image encoder."""
    if modality not in ("video", "points"):
        enc = factory(modality, config)
        if enc.modality != modality:
            raise EncoderError(f"modalities.{modality}.encoder: {config.encoder!r} gave a {enc.modality} encoder")
        return enc
    try:
        enc = factory(modality, config)
        if enc.modality == modality:
            return enc
        if enc.modality != "image":
            raise EncoderError(f"modalities.{modality}.encoder: {config.encoder!r} gave a {enc.modality} encoder")
        image = enc
    except EncoderError as exc:
        log.debug("%s: %s; using its image tower", modality, exc)
        image = factory("image", _image_config(config))
    if image.modality != "image":
        raise EncoderError(f"modalities.{modality}.encoder: {config.encoder!r} serves neither {modality} nor image")
    if modality == "video":
        pre = image.preprocessor()
        on_device = isinstance(pre, CropPreprocessor) and pre.resample in TORCH_FILTERS
        return PooledImageEncoder("video", image, FramesPreprocessor(pre),
                                  {"pooling": "mean of frame features", "frames": config.frames,
                                   "frame_resize": "device (antialiased)" if on_device else "worker"},
                                  before=DeviceFrames(pre) if on_device else None)
    info = {"pooling": "mean of depth-view features", "views": config.views,
            "render": f"orthographic z-buffer {RENDER_SIZE}px", "points": config.points}
    if renders_on_device(image.preprocessor(), RENDER_SIZE):  # the views drawn batched on the device
        return PooledImageEncoder("points", image, CloudCollate(config.views, COUNTS), {**info, "rendered": "device"},
                                  before=DeviceRender(config.views, RENDER_SIZE))
    return PooledImageEncoder("points", image, DepthViewsPreprocessor(image.preprocessor(), config.views),
                              {**info, "rendered": "worker"})
