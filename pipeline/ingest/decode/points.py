"""Point clouds: npy / npz / PLY, centred into the unit sphere and sub-sampled."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from pipeline.ingest.decode.base import DecodeError


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
