"""Audio on the encoder's device: PCM batches from the workers, resampled and fitted there in torch.

A DataLoader worker only decodes the clip's window to :class:`~pipeline.encoders.base.Pcm` at
the source rate (soundfile / PyAV: the one step that must run on a CPU). :class:`PcmCollate`
packs a batch of them end to end in one flat buffer, with their lengths, rates and windows (no
padding: a batch mixing a 10 s 44.1 kHz clip with short ones would otherwise write and ship every
row at the longest length, which cost the worker more than decoding); on the device,
:func:`clip_waves` unpacks each rate's rows, resamples them as one batched op and cuts every clip to
``seconds`` at the encoder's rate. What each encoder then computes (log-mel, fbank, blocks)
is batched torch too: :mod:`pipeline.encoders.aisfx`, :mod:`pipeline.encoders.whisper`,
:mod:`pipeline.encoders.hf_audio`.

The result equals what the decoder produced before, per clip on the CPU (the NumPy-era path):
a band-limited resampler (a Hann-windowed sinc low-pass of ``FILTER_TAPS`` each side when the
rate goes down, then linear interpolation exactly as ``F.interpolate(mode="linear",
align_corners=False)`` with the clip's own output length), then a centre crop or a centred
zero padding to ``round(seconds * rate)`` samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.encoders.base import Batch, Pcm

FILTER_TAPS = 32  # half-width of the low-pass kernel, in source samples (the decoder keeps this margin)
PCM_KEYS = ("pcm", "pcm_length", "pcm_rate", "pcm_keep", "pcm_cropped")


@dataclass(frozen=True)
class PcmCollate:
    """Picklable worker-side preprocessor: list of :class:`Pcm` (or float32 arrays taken as PCM at
    ``rate``) -> {"pcm": (sum of lengths,) float32, the clips end to end, "pcm_length", "pcm_rate",
    "pcm_keep" (B,) int64, "pcm_cropped" (B,) bool}; :func:`unpack` gives the padded rows back."""

    rate: int  # the rate of a plain array item (the encoder's)

    def __call__(self, items: list[Any]) -> Batch:
        pcms = [it if isinstance(it, Pcm) else Pcm(np.asarray(it, np.float32).reshape(-1), self.rate) for it in items]
        # float32 whatever a Pcm's samples hold (the old padded buffer was float32 too)
        flat = np.concatenate([p.samples for p in pcms]).astype(np.float32, copy=False) if pcms else np.zeros(0, np.float32)
        return {"pcm": torch.from_numpy(flat),
                "pcm_length": torch.tensor([len(p.samples) for p in pcms], dtype=torch.long),
                "pcm_rate": torch.tensor([p.rate for p in pcms], dtype=torch.long),
                "pcm_keep": torch.tensor([p.keep for p in pcms], dtype=torch.long),
                "pcm_cropped": torch.tensor([p.cropped for p in pcms], dtype=torch.bool)}


def unpack(batch: Batch, rows: torch.Tensor | None = None) -> torch.Tensor:
    """(len(rows), their longest length) float32: the ``rows`` (default all) of a :class:`PcmCollate`
    batch, each zero-padded after its samples."""
    lengths = batch["pcm_length"]
    clips = torch.split(batch["pcm"].float(), lengths.tolist())
    picked = [clips[i] for i in (range(len(clips)) if rows is None else rows.tolist())]
    if not picked:
        return batch["pcm"].new_zeros(0, 1).float()
    return torch.nn.utils.rnn.pad_sequence(picked, batch_first=True) if max(len(c) for c in picked) else \
        batch["pcm"].new_zeros(len(picked), 1).float()


def lowpass_kernel(rate: int, target: int, device: torch.device) -> torch.Tensor:
    """The anti-aliasing kernel (2 * FILTER_TAPS + 1 taps, unit sum) for going from ``rate`` down to ``target``."""
    cutoff = target / rate
    t = torch.arange(-FILTER_TAPS, FILTER_TAPS + 1, dtype=torch.float32, device=device)
    kernel = cutoff * torch.sinc(cutoff * t) * torch.hann_window(2 * FILTER_TAPS + 1, periodic=False, device=device)
    return kernel / kernel.sum()


def resample(x: torch.Tensor, lengths: torch.Tensor, rate: int, target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``x`` (B, L) at ``rate``, row i holding ``lengths[i]`` samples -> (B, L') at ``target``
    and the new lengths ``round(lengths * target / rate)``; samples past a row's length are zero."""
    if rate == target:
        return x, lengths
    if target < rate:  # low-pass at the new Nyquist before interpolating
        x = F.conv1d(x[:, None], lowpass_kernel(rate, target, x.device)[None, None], padding=FILTER_TAPS)[:, 0]
    n_out = torch.tensor([int(round(n * target / rate)) for n in lengths.tolist()], device=x.device)
    # source positions in float64: a float32 position drifts by ~1e-4 samples at 10 s of audio
    scale = lengths.to(torch.float64) / n_out.clamp(min=1).to(torch.float64)  # input / output, per row
    j = torch.arange(int(n_out.max()) if len(n_out) else 0, device=x.device, dtype=torch.float64)
    src = ((j[None] + 0.5) * scale[:, None] - 0.5).clamp(min=0)
    i0 = src.floor().long()
    lam = (src - i0).to(x.dtype)
    last = (lengths - 1).clamp(min=0)[:, None]
    i0 = torch.minimum(i0, last)
    i1 = torch.minimum(i0 + 1, last)
    y = x.gather(1, i0) * (1 - lam) + x.gather(1, i1) * lam
    return y * (j[None] < n_out[:, None]), n_out


def fit(y: torch.Tensor, start: torch.Tensor, length: torch.Tensor, n: int) -> torch.Tensor:
    """Row i's segment ``y[i, start:start + length]`` centre-cropped, or zero-padded centred, to ``n``."""
    p = torch.arange(n, device=y.device)[None]
    left = ((n - length) // 2).clamp(min=0)[:, None]  # padding before the segment
    skip = ((length - n) // 2).clamp(min=0)[:, None]  # segment samples dropped before the window
    src = start[:, None] + skip + p - left
    valid = (p >= left) & (p - left < (length[:, None] - skip).clamp(max=n))
    return torch.where(valid, y.gather(1, src.clamp(0, y.shape[1] - 1)), y.new_zeros(()))


def clip_waves(batch: Batch, rate: int, seconds: float) -> torch.Tensor:
    """(B, round(seconds * rate)) mono float32 at ``rate``: each row's clip resampled, centre-cropped
    or zero-padded (centred), as the per-clip decoder produced it. Rows of one source rate go together."""
    lengths, rates = batch["pcm_length"], batch["pcm_rate"]
    n = int(round(seconds * rate))
    out = batch["pcm"].new_zeros(len(lengths), n).float()
    for source in sorted(set(rates.tolist())):
        rows = (rates == source).nonzero().squeeze(1)
        y, got = resample(unpack(batch, rows), lengths[rows], int(source), rate)
        keep = torch.round(batch["pcm_keep"][rows].double() * rate / source).long()
        cropped = batch["pcm_cropped"][rows]
        # a cropped recording: the clip is the n samples from `keep` (fewer if the window fell short)
        length = torch.where(cropped, torch.minimum(got - keep, torch.full_like(got, n)), got).clamp(min=0)
        out[rows] = fit(y, torch.where(cropped, keep, torch.zeros_like(keep)), length, n)
    return out


def trimmed_lengths(waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, end) of each row's non-zero samples: the decoder's centred zero padding left out
    (a silent row keeps its first sample, as the per-clip code did)."""
    nz = waves != 0
    any_nz = nz.any(dim=1)
    idx = torch.arange(waves.shape[1], device=waves.device)
    first = torch.where(nz, idx, waves.shape[1]).min(dim=1).values
    last = torch.where(nz, idx, -1).max(dim=1).values
    first = torch.where(any_nz, first, torch.zeros_like(first))
    end = torch.where(any_nz, last + 1, torch.ones_like(last))
    return first, end


def left_align(waves: torch.Tensor, first: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row i's samples ``[first, end)`` moved to the start of the row, zeros after: (B, max length), lengths."""
    lengths = end - first
    width = int(lengths.max()) if len(lengths) else 0
    p = torch.arange(max(width, 1), device=waves.device)[None]
    src = (first[:, None] + p).clamp(max=waves.shape[1] - 1)
    return torch.where(p < lengths[:, None], waves.gather(1, src), waves.new_zeros(())), lengths


def waves_for(items: list[Any], rate: int, seconds: float, pad: bool = True) -> list[np.ndarray]:
    """Clips at ``rate`` as the per-clip decoder gave them (for a preprocessor that takes arrays):
    centre-cropped to ``seconds``, zero-padded to it (centred) unless ``pad`` is false."""
    batch = PcmCollate(rate)(items)
    waves = clip_waves(batch, rate, seconds).numpy()
    if pad:
        return list(waves)
    n = waves.shape[1]
    got = [min(n, int(round(int(length) * rate / int(r)))) if not bool(c) else n
           for length, r, c in zip(batch["pcm_length"], batch["pcm_rate"], batch["pcm_cropped"], strict=True)]
    return [w[(n - m) // 2:(n - m) // 2 + m] for w, m in zip(waves, got, strict=True)]


@dataclass(frozen=True)
class WaveAdapter:
    """Picklable: a preprocessor written for arrays at its encoder's rate, fed from PCM items
    (resampled here, in the worker, as the decoder did before preprocessing moved to the device)."""

    inner: Any
    rate: int
    seconds: float
    pad: bool = True

    def __call__(self, items: list[Any]) -> Batch:
        return self.inner(waves_for(items, self.rate, self.seconds, self.pad))
