"""``hf:<hub-id-or-local-path>``: frozen transformers models as encoders.

Dispatch is on what the loaded model can do, never on its name:

* image -- a model with ``get_image_features`` (CLIP, SigLIP, ...); else a vision model's
  pooled output (``pooler_output``, or the mean of ``last_hidden_state``).
* text  -- a model with ``get_text_features``; else a plain text model mean-pooled over the
  attention mask (sentence-transformers style).
* audio -- a model with ``get_audio_features`` (CLAP) fed by its feature extractor; else an
  audio model (Wav2Vec2, AST, ...) mean-pooled over time. The workers hand over PCM at the
  source rate; resampling and, for the extractors :mod:`pipeline.encoders.hf_audio` re-expresses
  in torch, the features run batched on the encoder's device (others in the workers).

Video and points are not served here: :mod:`pipeline.encoders.wrappers` runs them through the
image tower.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from pipeline.encoders.audio_features import PcmCollate, clip_waves
from pipeline.encoders.base import Batch, Encoder, EncoderError
from pipeline.encoders.hf_audio import device_extractor
from pipeline.encoders.image_prep import split_processor

log = logging.getLogger(__name__)

FEATURE_METHODS = {"image": "get_image_features", "text": "get_text_features", "audio": "get_audio_features"}


def _features(out: Any) -> torch.Tensor:
    """A features tensor from whatever a ``get_*_features`` returns (a tensor or a model output)."""
    if isinstance(out, torch.Tensor):
        return out
    if getattr(out, "pooler_output", None) is not None:
        return out.pooler_output
    return out[0]


def _pooled(out: Any, mask: torch.Tensor | None) -> torch.Tensor:
    """Pooled output when the model has one that is not None, else the (masked) mean over tokens."""
    hidden = out.last_hidden_state
    if mask is None:
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None and pooled.ndim == 2:
            return pooled
        return hidden.mean(dim=1)
    if mask.shape[1] != hidden.shape[1]:  # audio models downsample time: no token mask to apply
        return hidden.mean(dim=1)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class ImagePreprocessor:
    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, images: list[Any]) -> Batch:
        return {"pixel_values": self.processor(images=images, return_tensors="pt")["pixel_values"]}


class TextPreprocessor:
    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> Batch:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


class AudioPreprocessor:
    """Worker side, for an extractor with no torch version: PCM -> clips at the extractor's rate
    (the same resampler as on the device, here on the CPU) -> the extractor's own NumPy code."""

    def __init__(self, extractor: Any, rate: int, seconds: float):
        self.extractor, self.rate, self.seconds = extractor, rate, seconds

    def __call__(self, items: list[Any]) -> Batch:
        waves = clip_waves(PcmCollate(self.rate)(items), self.rate, self.seconds).numpy()
        enc = self.extractor(list(waves), sampling_rate=self.rate, return_tensors="pt", padding=True)
        return {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}


class DeviceAudio:
    """Device side: PCM batches -> clips at the extractor's rate -> its torch re-expression (hf_audio)."""

    def __init__(self, extract: Any, rate: int, seconds: float):
        self.extract, self.rate, self.seconds = extract, rate, seconds

    def __call__(self, batch: Batch) -> Batch:
        return self.extract(clip_waves(batch, self.rate, self.seconds))


class HFEncoder(Encoder):
    def __init__(self, modality: str, name: str, model: torch.nn.Module, preprocess: Any, dim: int,
                 method: str | None, info: dict[str, Any], sample_rate: int | None = None, on_device: Any = None):
        self.modality, self.name, self.model, self._pre, self.dim = modality, name, model, preprocess, dim
        self.method, self.info, self.sample_rate, self._on_device = method, info, sample_rate, on_device

    def preprocessor(self):
        return self._pre

    def prepare(self, batch: Batch) -> Batch:
        return self._on_device(batch) if self._on_device is not None else batch

    def encode(self, batch: Batch) -> torch.Tensor:
        if self.method:
            return _features(getattr(self.model, self.method)(**batch))
        out = self.model(**batch, return_dict=True)
        return _pooled(out, batch.get("attention_mask"))

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def provenance(self) -> dict[str, Any]:
        return dict(self.info)


def _probe_dim(encoder: HFEncoder, example: Any) -> int:
    with torch.no_grad():
        return int(encoder.features([example, example]).shape[-1])


def _image_steps(proc: Any) -> tuple[Any, Any, int]:
    """(worker preprocessor, device step, short side for draft decoding) of an image processor."""
    split = split_processor(proc)
    if split is None:
        size = getattr(proc, "size", None)
        shortest = (size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", 0)) or 0
        return ImagePreprocessor(proc), None, int(shortest)
    crop, normalize = split
    return crop, normalize, crop.shortest


def _audio_steps(ext: Any, rate: int, seconds: float) -> tuple[Any, DeviceAudio | None]:
    """(worker preprocessor, device step): features on the device when the extractor has a torch version."""
    extract = device_extractor(ext)
    if extract is None:
        log.info("%s has no torch version here: its features run in the DataLoader workers", type(ext).__name__)
        return AudioPreprocessor(ext, rate, seconds), None
    return PcmCollate(rate), DeviceAudio(extract, rate, seconds)


def build(modality: str, config: Any) -> Encoder:
    """Load ``config.encoder`` (``hf:<id-or-path>``) as a frozen encoder for ``modality``."""
    import numpy as np
    import transformers as tf

    name = config.encoder
    path = name[len("hf:"):]
    if modality not in FEATURE_METHODS:
        raise EncoderError(f"modalities.{modality}.encoder: {name} serves image, text or audio; "
                           f"{modality} goes through the image tower (wrappers.adapt)")
    try:
        model = tf.AutoModel.from_pretrained(path)
    except Exception as exc:
        raise EncoderError(f"modalities.{modality}.encoder: cannot load {name!r} ({exc}); "
                           "give a local folder saved with save_pretrained, or a hub id that is cached") from None
    model.eval().requires_grad_(False)
    method = FEATURE_METHODS[modality] if hasattr(model, FEATURE_METHODS[modality]) else None
    fallback = "mean over the attention mask" if modality == "text" else "pooler_output, else mean over tokens"
    info: dict[str, Any] = {"model_class": type(model).__name__, "pooling": method or fallback}
    rate, on_device, input_size = None, None, 0
    try:
        if modality == "image":
            proc = tf.AutoImageProcessor.from_pretrained(path)
            pre, on_device, input_size = _image_steps(proc)
            example = _blank_image()
            size = getattr(proc, "size", None)
            info["image_size"] = {k: v for k, v in dict(size).items() if v is not None} if size else None
            info["resize"] = f"Pillow, once, in the worker; {'normalised on the device' if on_device else type(proc).__name__}"
        elif modality == "text":
            tok = tf.AutoTokenizer.from_pretrained(path)
            max_len = _max_length(model, tok)
            pre, example = TextPreprocessor(tok, max_len), "a photo"
            info["max_length"] = max_len
        else:
            ext = tf.AutoFeatureExtractor.from_pretrained(path)
            rate = int(ext.sampling_rate)  # a different configured rate is refused by build_encoder
            pre, on_device = _audio_steps(ext, rate, float(getattr(config, "seconds", 10.0)))
            example = np.zeros(rate, dtype=np.float32)
            info["sample_rate"] = rate
            info["features"] = f"{type(ext).__name__} on the {'device (torch)' if on_device else 'worker (NumPy)'}"
    except EncoderError:
        raise
    except Exception as exc:
        raise EncoderError(f"modalities.{modality}.encoder: {name!r} has no usable {modality} "
                           f"preprocessor ({exc})") from None
    if method is None and modality != "text" and not _is_modality_model(model, modality):
        raise EncoderError(f"modalities.{modality}.encoder: {name!r} ({type(model).__name__}) has no "
                           f"{FEATURE_METHODS[modality]} and does not take {modality} input")
    enc = HFEncoder(modality, name, model, pre, 0, method, info, rate, on_device)
    enc.input_size, enc.takes_pcm = input_size, modality == "audio"
    enc.dim = _probe_dim(enc, example)
    log.info("hf encoder %s for %s: %s, dim %d, pooling %s", name, modality, info["model_class"], enc.dim,
             info["pooling"])
    return enc


def _is_modality_model(model: torch.nn.Module, modality: str) -> bool:
    import inspect

    params = inspect.signature(model.forward).parameters
    wanted = {"image": ("pixel_values",), "audio": ("input_values", "input_features")}[modality]
    return any(p in params for p in wanted)


def _max_length(model: torch.nn.Module, tokenizer: Any) -> int:
    cfg = getattr(model.config, "text_config", None) or model.config
    limit = getattr(cfg, "max_position_embeddings", None) or 512
    tok_limit = getattr(tokenizer, "model_max_length", limit) or limit
    return int(min(limit, tok_limit))


def _blank_image():
    from PIL import Image

    return Image.new("RGB", (32, 32), (127, 127, 127))
