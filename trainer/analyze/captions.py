"""Captions of the listings a report shows (centroid neighbours, retrieved listings).

The stores hold vectors, not text, so the captions are the samples' ``txt`` members, read from
the dataset's shards in one pass that stops once every wanted key is found. This is the analysis's
only read of the raw dataset; it goes through :mod:`pipeline.ingest.shards` (the one tar reader)
and tolerates shards that are gone: a caption it cannot find is empty, and the report says so.
"""

from __future__ import annotations

import logging

from pipeline.core.manifest import Manifest

log = logging.getLogger(__name__)
CAPTION_MEMBER = "txt"
MAX_CHARS = 300  # a shown caption is cut here


def read_captions(manifest: Manifest, keys: set[str]) -> dict[str, str]:
    """sample key -> caption (its ``txt`` member, whitespace collapsed, cut at MAX_CHARS)."""
    from pipeline.ingest.shards import ShardFault, expand_shards, iter_samples

    found: dict[str, str] = {}
    wanted = set(keys)
    for shard in expand_shards(manifest.dataset.shards):
        if not wanted - found.keys():
            break
        for sample in iter_samples(shard.url):
            if isinstance(sample, ShardFault):
                log.warning("captions: %s: %s", shard.url, sample.error)
                continue
            key = str(sample["__key__"])
            if key in wanted and CAPTION_MEMBER in sample:
                text = " ".join(bytes(sample[CAPTION_MEMBER]).decode("utf-8", "replace").split())
                found[key] = text if len(text) <= MAX_CHARS else text[:MAX_CHARS - 1] + "…"
    if missing := len(wanted - found.keys()):
        log.info("captions: %d of %d shown listings have no caption in the shards", missing, len(wanted))
    return found
