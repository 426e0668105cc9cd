"""Decode one sample's members into what encoders take, within the manifest's limits.

Each ``decode_<modality>`` takes the member bytes and the modality's manifest section and
returns the decoded item (see :mod:`pipeline.encoders.base` for the types) or raises
:class:`DecodeError` carrying the status (``corrupt`` for undecodable data, ``error`` for
anything else, limits included). :func:`decode_member` finds the member by extension and
turns an absent one into ``missing``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": ("jpg", "jpeg", "png", "webp"),
    "text": ("txt",),
    "video": ("mp4", "webm", "mkv"),
    "audio": ("flac", "wav", "mp3", "ogg", "m4a"),
    "points": ("npy", "npz", "ply"),
}


class DecodeError(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def decode_image(data: bytes, ext: str, cfg: Any):
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size  # header only: the limit is checked before the pixels are decoded
    except Exception as exc:
        raise DecodeError("corrupt", f"image: cannot read header: {exc}") from None
    if w * h > cfg.max_pixels:
        raise DecodeError("error", f"image: {w}x{h} exceeds max_pixels={cfg.max_pixels}")
    try:
        return img.convert("RGB")
    except Exception as exc:
        raise DecodeError("corrupt", f"image: cannot decode: {exc}") from None


def decode_text(data: bytes, ext: str, cfg: Any) -> str:
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DecodeError("corrupt", f"text: not UTF-8: {exc}") from None
    if len(text) > cfg.max_chars:
        raise DecodeError("error", f"text: {len(text)} characters exceed max_chars={cfg.max_chars}")
    if not text:
        raise DecodeError("error", "text: empty caption")
    return text


def decode_video(data: bytes, ext: str, cfg: Any) -> np.ndarray:
    """``cfg.frames`` frames sampled uniformly over the clip, uint8 (T, H, W, 3)."""
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            seconds = float(stream.duration * stream.time_base) if stream.duration else None
            if seconds is None and container.duration:
                seconds = container.duration / 1_000_000
            if seconds is not None and seconds > cfg.max_seconds:
                raise DecodeError("error", f"video: {seconds:.1f} s exceeds max_seconds={cfg.max_seconds}")
            if stream.width * stream.height > cfg.max_pixels:
                raise DecodeError("error", f"video: {stream.width}x{stream.height} exceeds max_pixels={cfg.max_pixels}")
            total = stream.frames or (int(seconds * float(stream.average_rate)) if seconds and stream.average_rate
                                      else 0)
            frames = _sample_frames(_within(container.decode(stream), cfg.max_seconds), total, cfg.frames)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError("corrupt", f"video: cannot decode: {exc}") from None
    if not frames:
        raise DecodeError("corrupt", "video: no frames")
    return np.stack(frames)


def _within(frames, max_seconds: float):
    """Decoded video frames, ending in an ``error`` status at the first frame past ``max_seconds``
    from the first: a clip whose header gives no duration is held to the limit while it decodes."""
    start = None
    for frame in frames:
        if frame.time is not None:
            start = frame.time if start is None else start
            if frame.time - start > max_seconds:
                raise DecodeError("error", f"video: longer than max_seconds={max_seconds} "
                                           f"(a frame at {frame.time - start:.1f} s)")
        yield frame


def _sample_frames(decoded, total: int, count: int) -> list[np.ndarray]:
    """``count`` frames spread uniformly over the clip, converting only the chosen ones.

    With a known frame count only the chosen frames are kept, so a long clip never sits in
    memory; if the container overstated the count, the last frame decoded stands in for the
    frames past the end. Without a count, every ``stride``-th frame is kept, the stride
    doubling whenever more than ``4 * count`` are held, and the frames nearest to a uniform
    spread are taken at the end (exactly the uniform ones for clips of up to ``4 * count`` frames).
    """
    if total <= 0:
        kept: list[tuple[int, np.ndarray]] = []
        stride, seen = 1, 0
        for i, frame in enumerate(decoded):
            seen = i + 1
            if i % stride == 0:
                kept.append((i, frame.to_ndarray(format="rgb24")))
                if len(kept) > 4 * count:
                    kept, stride = kept[::2], stride * 2
        if not kept:
            return []
        index = np.array([i for i, _ in kept])
        wanted = np.linspace(0, seen - 1, count).round().astype(int)
        return [kept[int(np.abs(index - w).argmin())][1] for w in wanted]
    wanted = np.linspace(0, total - 1, count).round().astype(int)
    want = set(wanted.tolist())
    picks: dict[int, np.ndarray] = {}
    last = None
    for i, frame in enumerate(decoded):
        if i in want:
            picks[i] = frame.to_ndarray(format="rgb24")
        last = frame
        if i >= wanted[-1]:
            break
    if last is None:
        return []
    tail = last.to_ndarray(format="rgb24") if len(picks) < len(want) else None
    return [picks.get(int(i), tail) for i in wanted]


def _read_audio(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """(samples, channels) float32 and the rate; soundfile first, PyAV for what it cannot read.
    PyAV decoding stops with an ``error`` status once past ``max_seconds`` (its header may not say)."""
    import soundfile as sf

    try:
        wav, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return wav, rate
    except Exception:
        pass
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        chunks, samples = [], 0
        for frame in container.decode(stream):
            samples += frame.samples
            if samples > max_seconds * rate:
                raise DecodeError("error", f"audio: longer than max_seconds={max_seconds} "
                                           f"({samples / rate:.1f} s decoded)")
            chunks.append(frame.to_ndarray().astype(np.float32))
    if not chunks:
        raise ValueError("no audio frames")
    planar = [c if c.ndim == 2 else c[None] for c in chunks]
    wav = np.concatenate(planar, axis=1)  # (channels, samples) for planar formats
    return wav.T, rate


def resample(wav: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited (windowed-sinc) resampling of a mono signal."""
    if rate == target or len(wav) == 0:
        return wav
    import torch
    import torch.nn.functional as F

    n_out = int(round(len(wav) * target / rate))
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    if target < rate:  # low-pass at the new Nyquist before interpolating
        cutoff = target / rate
        taps = 32
        t = torch.arange(-taps, taps + 1, dtype=torch.float32)
        kernel = cutoff * torch.sinc(cutoff * t) * torch.hann_window(2 * taps + 1, periodic=False)
        x = F.conv1d(x[None, None], (kernel / kernel.sum())[None, None], padding=taps)[0, 0]
    y = F.interpolate(x[None, None], size=n_out, mode="linear", align_corners=False)[0, 0]
    return y.numpy()


def decode_audio(data: bytes, ext: str, cfg: Any, sample_rate: int) -> np.ndarray:
    """Mono float32 at ``sample_rate``, centre-cropped or zero-padded to ``cfg.seconds``."""
    try:
        import soundfile as sf

        info = sf.info(io.BytesIO(data))  # header only: an over-long recording is never decoded
        if info.duration > cfg.max_seconds:
            raise DecodeError("error", f"audio: {info.duration:.1f} s exceeds max_seconds={cfg.max_seconds}")
    except DecodeError:
        raise
    except Exception:
        pass  # not a soundfile format (mp3/m4a on old libsndfile, ...): PyAV decodes it below
    try:
        wav, rate = _read_audio(data, cfg.max_seconds)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError("corrupt", f"audio: cannot decode: {exc}") from None
    if wav.size == 0:
        raise DecodeError("corrupt", "audio: no samples")
    if len(wav) / rate > cfg.max_seconds:
        raise DecodeError("error", f"audio: {len(wav) / rate:.1f} s exceeds max_seconds={cfg.max_seconds}")
    mono = wav.mean(axis=1)
    mono = resample(mono, rate, sample_rate)
    n = int(round(cfg.seconds * sample_rate))
    if len(mono) > n:
        start = (len(mono) - n) // 2
        mono = mono[start:start + n]
    elif len(mono) < n:
        pad = n - len(mono)
        mono = np.pad(mono, (pad // 2, pad - pad // 2))
    return np.ascontiguousarray(mono, dtype=np.float32)


def _read_ply(data: bytes) -> np.ndarray:
    """xyz (and rgb when present) of an ASCII or binary little-endian PLY's vertex element."""
    head_end = data.index(b"end_header") + len(b"end_header")
    head_end = data.index(b"\n", head_end) + 1
    header = data[:head_end].decode("ascii").splitlines()
    fmt = next(line.split()[1] for line in header if line.startswith("format"))
    count, props, in_vertex = 0, [], False
    types = {"float": "<f4", "float32": "<f4", "double": "<f8", "uchar": "u1", "uint8": "u1",
             "int": "<i4", "int32": "<i4", "short": "<i2", "ushort": "<u2", "char": "i1", "uint": "<u4"}
    for line in header:
        tok = line.split()
        if tok[:2] == ["element", "vertex"]:
            count, in_vertex = int(tok[2]), True
        elif tok and tok[0] == "element":
            in_vertex = False
        elif in_vertex and tok and tok[0] == "property":
            props.append((tok[-1], types[tok[1]]))
    if fmt == "ascii":
        rows = np.loadtxt(io.BytesIO(data[head_end:]), max_rows=count, ndmin=2)
        table = {name: rows[:, i] for i, (name, _) in enumerate(props)}
    elif fmt == "binary_little_endian":
        arr = np.frombuffer(data, dtype=np.dtype(props), count=count, offset=head_end)
        table = {name: arr[name] for name, _ in props}
    else:
        raise ValueError(f"unsupported PLY format {fmt!r}")
    cols = [table[c] for c in ("x", "y", "z")]
    if all(c in table for c in ("red", "green", "blue")):
        cols += [np.asarray(table[c], dtype=np.float32) / 255.0 for c in ("red", "green", "blue")]
    return np.stack(cols, axis=1)


def decode_points(data: bytes, ext: str, cfg: Any, seed: int = 0) -> np.ndarray:
    """(points, 3|6) float32: xyz centred and scaled into the unit sphere, sub-sampled to ``cfg.points``."""
    try:
        if ext == "ply":
            pts = _read_ply(data)
        else:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
            if ext == "npz":
                arr = arr[arr.files[0]]
            pts = np.asarray(arr)
    except Exception as exc:
        raise DecodeError("corrupt", f"points: cannot read {ext}: {exc}") from None
    if pts.ndim != 2 or pts.shape[1] not in (3, 6) or not np.issubdtype(pts.dtype, np.number):
        raise DecodeError("corrupt", f"points: expected an (N, 3) or (N, 6) numeric array, got {pts.shape} {pts.dtype}")
    if len(pts) == 0:
        raise DecodeError("corrupt", "points: empty cloud")
    if len(pts) > cfg.max_points:
        raise DecodeError("error", f"points: {len(pts)} points exceed max_points={cfg.max_points}")
    pts = pts.astype(np.float32)
    if not np.isfinite(pts).all():
        raise DecodeError("corrupt", "points: non-finite coordinates")
    rng = np.random.default_rng(seed)  # deterministic per sample: reruns give the same vectors
    idx = rng.choice(len(pts), cfg.points, replace=len(pts) < cfg.points)
    pts = pts[np.sort(idx)]
    xyz = pts[:, :3] - pts[:, :3].mean(axis=0)
    radius = float(np.linalg.norm(xyz, axis=1).max())
    pts[:, :3] = xyz / radius if radius > 0 else xyz
    return pts


def find_member(sample: dict[str, Any], modality: str) -> tuple[str, bytes] | None:
    for ext in EXTENSIONS[modality]:
        if ext in sample:
            return ext, sample[ext]
    return None


def decode_member(sample: dict[str, Any], modality: str, cfg: Any, sample_rate: int | None = None):
    """The decoded item of ``modality`` in ``sample``; DecodeError (status, message) when there is none."""
    found = find_member(sample, modality)
    if found is None:
        raise DecodeError("missing", f"{modality}: no {'/'.join(EXTENSIONS[modality])} member")
    ext, data = found
    if modality == "image":
        return decode_image(data, ext, cfg)
    if modality == "text":
        return decode_text(data, ext, cfg)
    if modality == "video":
        return decode_video(data, ext, cfg)
    if modality == "audio":
        return decode_audio(data, ext, cfg, sample_rate or 16_000)
    if modality == "points":
        seed = int.from_bytes(str(sample["__key__"]).encode()[-8:].rjust(8, b"\0"), "little")
        return decode_points(data, ext, cfg, seed=seed)
    raise ValueError(f"unknown modality {modality!r}")
