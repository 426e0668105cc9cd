"""Point clouds: npy / npz / PLY, centred into the unit sphere and sub-sampled.

Bounded before anything is allocated: the array's shape and dtype are read from the ``.npy``
header (inside an ``.npz``, from the first member's header, before it is decompressed) and
the points limit is checked on them; then exactly the bytes that shape needs are read. Only a
real floating or integer dtype is a cloud (complex, boolean, object and structured arrays are
refused, never silently cast). Normalisation runs in float64 with the cloud first divided by
its largest coordinate, so any finite input (1e38 included) gives finite output; a non-finite
value at any step is a status row.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np

from pipeline.ingest.decode.base import DecodeError

PLY_TYPES = {"float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8", "uchar": "u1", "uint8": "u1",
             "char": "i1", "int8": "i1", "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
             "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4"}


def _check_array(shape: tuple[int, ...], dtype: np.dtype, cfg: Any) -> None:
    if dtype.fields is not None or dtype.kind not in "fiu":
        raise DecodeError("corrupt", f"points: expected a real floating or integer array, got dtype {dtype}")
    if len(shape) != 2 or shape[1] not in (3, 6):
        raise DecodeError("corrupt", f"points: expected an (N, 3) or (N, 6) array, got shape {shape}")
    if shape[0] == 0:
        raise DecodeError("corrupt", "points: empty cloud")
    if shape[0] > cfg.max_points:
        raise DecodeError("error", f"points: {shape[0]} points exceed max_points={cfg.max_points}")


def _read_npy(stream, cfg: Any) -> np.ndarray:
    """An array from a ``.npy`` stream, its header checked before its data is read."""
    fmt = np.lib.format
    version = fmt.read_magic(stream)
    read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, fortran, dtype = read_header(stream)
    _check_array(shape, dtype, cfg)
    count = int(np.prod(shape))
    nbytes = count * dtype.itemsize
    data = stream.read(nbytes + 1)  # one byte more than the header's shape needs: a longer array is caught
    if len(data) != nbytes:
        what = "more data than" if len(data) > nbytes else f"{len(data)} bytes of the {nbytes} promised by"
        raise DecodeError("corrupt", f"points: the array holds {what} its header's shape {shape}")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C")


def _read_npz(data: bytes, cfg: Any) -> np.ndarray:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = [n for n in zf.namelist() if n.endswith(".npy")]
        if not names:
            raise ValueError("no .npy member in the .npz")
        with zf.open(names[0]) as member:  # decompressed as it is read: only the bytes asked for
            return _read_npy(member, cfg)


def _read_ply(data: bytes, cfg: Any) -> np.ndarray:
    """xyz (and rgb when present) of an ASCII or binary little-endian PLY's vertex element."""
    head_end = data.index(b"end_header") + len(b"end_header")
    head_end = data.index(b"\n", head_end) + 1
    header = data[:head_end].decode("ascii").splitlines()
    fmt = next(line.split()[1] for line in header if line.startswith("format"))
    count, props, in_vertex = 0, [], False
    for line in header:
        tok = line.split()
        if tok[:2] == ["element", "vertex"]:
            count, in_vertex = int(tok[2]), True
        elif tok and tok[0] == "element":
            in_vertex = False
        elif in_vertex and tok and tok[0] == "property":
            props.append((tok[-1], PLY_TYPES[tok[1]]))
    _check_array((count, 3), np.dtype(np.float32), cfg)
    if fmt == "ascii":
        rows = np.loadtxt(io.BytesIO(data[head_end:]), max_rows=count, ndmin=2)
        table = {name: rows[:, i] for i, (name, _) in enumerate(props)}
    elif fmt == "binary_little_endian":
        arr = np.frombuffer(data, dtype=np.dtype(props), count=count, offset=head_end)
        table = {name: arr[name] for name, _ in props}
    else:
        raise ValueError(f"unsupported PLY format {fmt!r}")
    cols = [np.asarray(table[c], dtype=np.float64) for c in ("x", "y", "z")]
    if all(c in table for c in ("red", "green", "blue")):
        cols += [np.asarray(table[c], dtype=np.float64) / 255.0 for c in ("red", "green", "blue")]
    return np.stack(cols, axis=1)


def _read(data: bytes, ext: str, cfg: Any) -> np.ndarray:
    try:
        if ext == "ply":
            return _read_ply(data, cfg)
        if ext == "npz":
            return _read_npz(data, cfg)
        return _read_npy(io.BytesIO(data), cfg)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError("corrupt", f"points: cannot read {ext}: {type(exc).__name__}: {exc}") from None


def normalise(pts: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` points sub-sampled (deterministically per ``seed``), xyz centred and scaled into
    the unit sphere, in float64 (returned as float32)."""
    rng = np.random.default_rng(seed)  # deterministic per sample: reruns give the same vectors
    idx = rng.choice(len(pts), count, replace=len(pts) < count)
    pts = np.array(pts[np.sort(idx)], dtype=np.float64)
    xyz = pts[:, :3]
    big = float(np.abs(xyz).max())
    if big > 0:
        xyz /= big  # now within [-1, 1]: the mean and the norms below cannot overflow
    xyz -= xyz.mean(axis=0)
    radius = float(np.linalg.norm(xyz, axis=1).max())
    if radius > 0:
        xyz /= radius
    if not np.isfinite(pts).all():
        raise DecodeError("error", "points: non-finite coordinates after normalisation")
    return pts.astype(np.float32)


def decode_points(data: bytes, ext: str, cfg: Any, seed: int = 0) -> np.ndarray:
    """(points, 3|6) float32: xyz centred and scaled into the unit sphere, sub-sampled to ``cfg.points``."""
    pts = _read(data, ext, cfg)
    if not np.isfinite(pts).all():
        raise DecodeError("corrupt", "points: non-finite coordinates")
    return normalise(pts, cfg.points, seed)
