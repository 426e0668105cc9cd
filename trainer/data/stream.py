"""Stream mode: a modality's store read from memory-mapped Parquet, one row group at a time.

:class:`MappedStore` stands where an in-memory ``(n, dim)`` tensor of store vectors would:
``store[idx]`` (an index tensor/array or a slice) returns those rows as a CPU tensor in the
stored dtype, ``len``, ``shape`` and ``dtype`` behave like the tensor's. Nothing but the
Parquet footers is read up front; the parts are opened with ``pyarrow.memory_map``.

How a gather works, and why this way:

* Rows are addressed by their global store index (parts in :func:`~pipeline.core.store.list_parts`
  order, the order :func:`~pipeline.core.store.read_store` concatenates them in), so the training
  rows, the permutation and therefore every batch are exactly those of the in-memory mode:
  a stream run gives the same heads as an in-memory one for the same seed (tested bit for bit).
* Parts are zstd-compressed, so the mapped bytes cannot be used in place: the unit of decoding
  is a row group's ``embedding`` column, whatever the number of rows wanted from it.
* Read-ahead window (:meth:`MappedStore.prefetch`, driven by the training loop): the order of an
  epoch is known in advance, so the loop hands over the rows of the next ``K`` steps; the distinct
  rows are grouped by row group (sorted, each row group decoded once per window) and copied into a
  compact buffer, and those ``K`` batches are then served from it without decoding. ``K`` is the
  most steps whose rows fit the store's share of the budget. An epoch then decodes each store
  about ``store size / budget`` times, instead of once per step.
* Anything not in the window (a caller that does not prefetch, such as the ridge baseline or a
  benchmark) goes through an LRU cache of decoded row groups, in what the window leaves of the
  budget. A row group larger than that room is decoded, used and dropped (a warning says so).

Memory: window + cache never exceed the budget (``[train] memory_gb``, shared by the stores in
proportion to their size); on top of it come one row group being decoded, the batch, and a
constant (pyarrow's allocator, ~90 MB measured). The mapped pages are file-backed page cache,
which the OS reclaims. Bounded by the configuration, not by the store size.

The trade-off: exact batches under a uniform random permutation mean random access into every
store. With a budget of a fraction ``f`` of a store, an epoch decodes it ``~1/f`` times (measured
on 2 CPU cores, 200k x 1024 float16 = 410 MB, 1,024-row row groups, batch 1,024: 64 MB budget
115 ms/step, 128 MB 82 ms/step; without read-ahead 3.5 s/step). A block-shuffled order (shuffle
row groups, then rows within a buffer) would decode each anchor row group once per epoch, but
partners of kNN quintuples sit anywhere in their stores, and it would change the batches; this
module keeps the batches identical instead.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from pipeline.core.layout import OutputLayout
from pipeline.core.store import (
    check_block,
    list_parts,
    open_part,
    open_store,
    read_keys,
    read_row_group,
    table_vectors,
)

log = logging.getLogger(__name__)


def store_nbytes(layout: OutputLayout, modality: str) -> int:
    """Bytes the modality's vectors take in memory (rows x dim x itemsize), from the footers only."""
    return sum(MappedStore.footer(p)[1] for p in list_parts(layout.embeddings(modality)))


def store_dim(layout: OutputLayout, modality: str) -> int:
    """The dim of a modality's vectors, from its first part's schema (nothing else is read)."""
    parts = list_parts(layout.embeddings(modality))
    if not parts:
        raise FileNotFoundError(f"no embedding store for {modality!r} under {layout.embeddings(modality)}")
    return int(open_part(parts[0]).schema_arrow.field("embedding").type.list_size)


class MappedStore:
    """One modality's store vectors behind memory-mapped Parquet parts and a bounded row-group cache."""

    def __init__(self, layout: OutputLayout, modality: str, budget: int) -> None:
        self.modality = modality
        opened = open_store(layout.root, modality)  # footers checked; every block is checked as it is decoded
        self.files, self.infos = [f for f, _ in opened], [info for _, info in opened]
        self.parts = [info.path for info in self.infos]
        self.budget = int(budget)
        emb = self.files[0].schema_arrow.field("embedding").type
        self.dim = int(emb.list_size)
        self.np_dtype = np.dtype(emb.value_type.to_pandas_dtype())
        self.metadata = self.infos[0].metadata
        # (part, row group) of every row group, in store order, and each one's first global row
        self.groups = [(f, g) for f, pf in enumerate(self.files) for g in range(pf.num_row_groups)]
        sizes = [self.files[f].metadata.row_group(g).num_rows for f, g in self.groups]
        self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()  # row group -> (rows, dim), LRU order
        self.cached_bytes = 0
        self.window: tuple[np.ndarray, np.ndarray] | None = None  # (sorted rows, their vectors) prefetched
        self.window_bytes = 0
        self.peak_cached_bytes = 0  # the most cache + window ever held (tests check it against the budget)
        self.decoded = 0  # row groups decoded so far (cache misses)
        self._warned = False

    @staticmethod
    def footer(path: Path) -> tuple[int, int]:
        """(rows, bytes of the decoded vectors) of one part, from its footer."""
        pf = open_part(path)
        emb = pf.schema_arrow.field("embedding").type
        rows = pf.metadata.num_rows
        return rows, rows * emb.list_size * np.dtype(emb.value_type.to_pandas_dtype()).itemsize

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.dim

    @property
    def dtype(self) -> torch.dtype:
        return torch.from_numpy(np.zeros(0, self.np_dtype)).dtype

    @property
    def nbytes(self) -> int:
        return len(self) * self.dim * self.np_dtype.itemsize

    def __getitem__(self, index: slice | torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(index, slice):
            idx = np.arange(*index.indices(len(self)), dtype=np.int64)
        else:
            idx = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.modality} store: row index out of range [0, {len(self)})")
        return torch.from_numpy(self.gather(idx))

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (global store indices) as an ``(len(idx), dim)`` array: from the prefetched
        window where it holds them, the rest row group by row group through the LRU cache."""
        out = np.empty((len(idx), self.dim), self.np_dtype)
        todo = np.arange(len(idx))
        if self.window is not None and len(idx):
            held, buf = self.window
            pos = np.minimum(np.searchsorted(held, idx), max(0, len(held) - 1))
            hit = held[pos] == idx if len(held) else np.zeros(len(idx), bool)
            out[hit] = buf[pos[hit]]
            todo = np.flatnonzero(~hit)
        for g, sel in self._by_group(idx[todo]):
            out[todo[sel]] = self._row_group(g)[idx[todo[sel]] - self.offsets[g]]
        return out

    def prefetch(self, idx: np.ndarray) -> bool:
        """Read the distinct rows ``idx`` (the coming steps' rows) into the window buffer, decoding each
        row group they touch once; the LRU cache is emptied to make room. False (nothing buffered)
        when the distinct rows alone take more than the budget."""
        self.window, self.window_bytes = None, 0
        self.cache.clear()
        self.cached_bytes = 0
        held = np.unique(np.asarray(idx, dtype=np.int64))
        if len(held) * self.dim * self.np_dtype.itemsize > self.budget:
            return False
        buf = np.empty((len(held), self.dim), self.np_dtype)
        for g, sel in self._by_group(held):
            buf[sel] = self._decode(g)[held[sel] - self.offsets[g]]
        self.window, self.window_bytes = (held, buf), buf.nbytes
        self.peak_cached_bytes = max(self.peak_cached_bytes, self.window_bytes)
        return True

    def _by_group(self, idx: np.ndarray):
        """``(row group, positions in idx)`` for every row group ``idx`` touches, in store order."""
        if not len(idx):
            return
        group = np.searchsorted(self.offsets, idx, side="right") - 1
        order = np.argsort(group, kind="stable")
        starts = np.flatnonzero(np.diff(group[order], prepend=-1))
        for a, b in zip(starts, [*starts[1:], len(order)], strict=True):
            yield int(group[order[a]]), order[a:b]

    def _decode(self, g: int) -> np.ndarray:
        f, rg = self.groups[g]
        self.decoded += 1
        table = read_row_group(self.files[f], self.parts[f], rg, ["embedding"])
        first_row = int(self.offsets[g] - self.offsets[g - rg])  # row groups of one part are consecutive
        return check_block(table_vectors(table), self.infos[f], first_row)

    def _row_group(self, g: int) -> np.ndarray:
        hit = self.cache.get(g)
        if hit is not None:
            self.cache.move_to_end(g)
            return hit
        block = self._decode(g)
        room = self.budget - self.window_bytes
        if block.nbytes > room:
            if not self._warned:
                log.warning("stream: a %s row group (%.1f MB) exceeds what train.memory_gb leaves the cache; "
                            "it is decoded per gather and not cached", self.modality, block.nbytes / 1e6)
                self._warned = True
            return block
        while self.cache and self.cached_bytes + block.nbytes > room:
            _, old = self.cache.popitem(last=False)
            self.cached_bytes -= old.nbytes
        self.cache[g] = block
        self.cached_bytes += block.nbytes
        self.peak_cached_bytes = max(self.peak_cached_bytes, self.cached_bytes + self.window_bytes)
        return block

    def read_keys(self) -> np.ndarray:
        """The store keys (object array of str), reading only the ``key`` column of each part."""
        keys = [col.to_pylist() for col in read_keys(self.parts)]  # each key once over the store, or StoreError
        return np.asarray([k for part in keys for k in part], dtype=object)
