"""What is left to do: the parts of this rank's shards that do not exist yet.

A (shard, modality) part is done when both its embeddings part and its status part exist
(parts are renamed into place, so an existing part is complete) and, given the current
encoder's store metadata, the embeddings part was made by that encoder
(:data:`pipeline.core.store.STORE_IDENTITY`): one store never mixes encoders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.layout import OutputLayout
from pipeline.core.store import identity_diff, read_metadata
from pipeline.ingest.shards import Shard, split_by
from pipeline.precompute.loader import ShardWork


class MixedEncoders(Exception):
    """A finished part was made by another encoder than the current one (the stage names the key)."""

    def __init__(self, part: Path, modality: str, diff: list[str]):
        super().__init__(f"{part} was made by another encoder ({'; '.join(diff)})")
        self.part, self.modality, self.diff = part, modality, diff


def part_done(layout: OutputLayout, modality: str, shard_id: str,
              metadata: Mapping[str, Any] | None = None) -> bool:
    """Both parts exist; with ``metadata`` (the current encoder's), the embeddings part must match it."""
    emb = layout.embedding_part(modality, shard_id)
    if not (emb.exists() and layout.status_part(modality, shard_id).exists()):
        return False
    if metadata is not None:
        diff = identity_diff(read_metadata(emb), metadata)
        if diff:
            raise MixedEncoders(emb, modality, diff)
    return True


def plan_work(shards: Sequence[Shard], modalities: Sequence[str], layout: OutputLayout, rank: int, world: int,
              metadata: Mapping[str, Mapping[str, Any]] | None = None) -> list[ShardWork]:
    """This rank's shards, each with only what is missing of it. With ``metadata`` (per modality,
    the current encoder's store metadata), a finished part made by another encoder is :class:`MixedEncoders`."""
    work = []
    for shard in split_by(list(shards), rank, world):
        mods = tuple(m for m in modalities
                     if not part_done(layout, m, shard.shard_id, metadata and metadata.get(m)))
        meta = not layout.metadata_part(shard.shard_id).exists()
        if mods or meta:
            work.append(ShardWork(shard, mods, meta))
    return work
