"""Publishing refuses stores made with random weights (``weights = "random"``), unless told.

Random weights are for throughput benches and tests; a bundle of such vectors would look
like a dataset and mean nothing. Every stored modality's metadata says which weights made
it (``weights``, written by precompute); ``[publish] allow_random_weights = true`` lets such a
bundle through, and its card and bundle.json still say so.
"""

from __future__ import annotations

from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import ManifestError, PublishConfig
from pipeline.core.store import list_parts, read_metadata, stored_modalities

RANDOM = "random"


def random_weight_stores(layout: OutputLayout) -> list[str]:
    """The stored modalities whose first part says it was encoded with random weights."""
    out = []
    for m in stored_modalities(layout.root):
        parts = list_parts(layout.embeddings(m))
        if parts and read_metadata(parts[0]).get("weights") == RANDOM:
            out.append(m)
    return out


def check_weights(cfg: PublishConfig, layout: OutputLayout) -> list[str]:
    """Raise unless no store has random weights or ``publish.allow_random_weights`` is set; return them."""
    random = random_weight_stores(layout)
    if random and not cfg.allow_random_weights:
        raise ManifestError(f"publish.allow_random_weights: the {', '.join(random)} store(s) were encoded with "
                            "random weights (modalities.<m>.weights = \"random\"), meaningless as a dataset; "
                            "re-encode with real weights, or set publish.allow_random_weights = true to publish anyway")
    return random
