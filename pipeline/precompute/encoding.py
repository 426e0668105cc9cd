"""The device side of precompute: one modality's frozen encoder, batches -> stored vectors (its output convention)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import torch

from pipeline.core.manifest import ModalityConfig, PrecomputeConfig
from pipeline.encoders.audio_features import WaveAdapter
from pipeline.encoders.base import Batch, Encoder
from pipeline.encoders.conventions import OutputConvention
from pipeline.encoders.weights import weights_used
from pipeline.precompute.decode_path import choose_decode
from pipeline.precompute.handlers import Handler
from pipeline.precompute.jpeg_device import DeviceJpegStep, PillowJpeg, TorchvisionJpeg
from pipeline.precompute.loader import JpegBatch, ModalityPlan, StatusRow

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(setting: str, state: Any) -> torch.device:
    """``[precompute] device`` for this rank (``state``: accelerate's PartialState)."""
    if setting == "auto":
        return state.device if torch.cuda.is_available() else torch.device("cpu")
    if setting == "cuda":
        return torch.device("cuda", state.local_process_index)
    return torch.device(setting)


class Encoding:
    """One modality's encoder on the device: batches -> stored vectors (and the rows it could not encode)."""

    def __init__(self, modality: str, encoder: Encoder, config: ModalityConfig, pc: PrecomputeConfig,
                 dataset: str, device: torch.device):
        self.modality, self.encoder, self.config, self.device = modality, encoder.to(device), config, device
        self.dtype, self.convention = config.dtype, OutputConvention.of(config)
        self.autocast = AUTOCAST.get(pc.precision) if device.type == "cuda" else None
        self.forward = torch.compile(encoder.encode, dynamic=True) if pc.compile else encoder.encode
        # the device-side preparation (a plugin written before Encoder.prepare has none)
        self.prepare = getattr(encoder, "prepare", None) or (lambda batch: batch)
        # [modalities.image] decode: "device" = plain JPEGs decoded here in batches (ManifestError if it cannot)
        self.decode = choose_decode(getattr(config, "decode", "cpu"), device, encoder) if modality == "image" else "cpu"
        self.metadata = _json_safe({
            "encoder": encoder.name, "digest": encoder.digest(), "dim": encoder.dim, "dtype": config.dtype,
            **self.convention.metadata(), "weights": weights_used(modality, config, encoder), "modality": modality,
            "dataset": dataset,
            "precision": pc.precision if self.autocast else "fp32", "device": device.type,
            "preprocessing": {**dataclasses.asdict(config), **encoder.provenance(),
                              **({"sample_rate": encoder.sample_rate} if encoder.sample_rate else {}),
                              **({"decode_path": self.decode} if modality == "image" else {})},
        })

    def plan(self) -> ModalityPlan:
        """What a DataLoader worker needs to decode and preprocess this modality."""
        rate = getattr(self.config, "sample_rate", 0) or self.encoder.sample_rate
        pre = self.encoder.preprocessor()
        if self.modality == "audio" and not getattr(self.encoder, "takes_pcm", False):
            # an encoder whose preprocessor takes arrays at its rate: resample for it in the worker
            pre = WaveAdapter(pre, int(rate or 16_000), float(self.config.seconds), bool(getattr(self.config, "pad", True)))
        side = getattr(self.encoder, "input_size", 0) if self.modality == "image" else 0
        return ModalityPlan(self.config, pre, rate, side, self.decode)

    def jpeg_step(self) -> DeviceJpegStep:
        """The device-decode step of this (image, decode = device) modality, built on first use."""
        if getattr(self, "_jpeg_step", None) is None:
            crop = self.encoder.preprocessor()
            side = getattr(self.encoder, "input_size", 0)
            self._jpeg_step = DeviceJpegStep(TorchvisionJpeg(crop, self.device), PillowJpeg(crop, self.config, side),
                                             self.device)
        return self._jpeg_step

    def decode_jpegs(self, msg: JpegBatch, handler: Handler) -> tuple[tuple[str, ...], Batch | None, list[StatusRow]]:
        """A worker's still-encoded JPEGs -> (keys, a batch ready for :meth:`__call__`, status rows of the rest)."""
        return self.jpeg_step()(msg, handler)

    def __call__(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """(stored vectors (B, dim) float32, finite mask (B,))."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.inference_mode():
            batch = self.prepare(batch)  # fp32: resampling, features, normalisation on the device
            with torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16,
                                enabled=self.autocast is not None):
                feats = self.forward(batch)
        vectors, ok = self.convention.apply(feats)  # the modality's normalize / scale keys
        return vectors.cpu().numpy(), ok.cpu().numpy()

    def texts(self, texts: list[str], batch_size: int) -> np.ndarray:
        pre = self.encoder.preprocessor()
        parts = [self(pre(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        if not all(ok.all() for _, ok in parts):
            raise ValueError("the text encoder gave a non-finite or zero vector for a class name")
        return np.concatenate([v for v, _ in parts])


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    """Provenance as plain JSON (processor configs may hold their own mapping types)."""
    return json.loads(json.dumps(value, default=lambda o: dict(o) if hasattr(o, "items") else str(o)))
