"""`bindery import-heads PATH MANIFEST --run NAME`: EBind's released heads as a bindery run.

Reads an ``ebind-full``-layout safetensors (:mod:`pipeline.core.ebind_heads`) and writes
``runs/<NAME>/heads.safetensors`` + ``config.json`` (:mod:`pipeline.core.heads_file`), so
``eval``, ``pair`` (``pair.head_run``) and ``analyze`` use EBind's own heads on bindery stores.
The heads map into ``train.anchor``'s space (EBind: PE-Core's, with image and video as
``train.anchor_passthrough``). When the stores exist, each head's input width must be its
store's dim and its output width the anchor's. EBind's heads expect EBind's input conventions
(``manifests/ebind.toml``): a store made otherwise gets a warning, not an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pipeline.core.ebind_heads import FORMAT, HeadsLayoutError, read_ebind_heads
from pipeline.core.hashing import file_sha256
from pipeline.core.heads_file import save_heads
from pipeline.core.manifest import Manifest, ManifestError
from pipeline.core.store import list_parts, read_metadata

log = logging.getLogger(__name__)
DEFAULT_RUN = "ebind-full"

# what EBind's heads take, by modality (METHODS.md section 1)
EBIND_INPUTS = {"audio": {"normalized": False}, "points": {"normalized": False}}


def _store_dim(manifest: Manifest, modality: str) -> tuple[int | None, dict[str, Any]]:
    parts = list_parts(manifest.layout.embeddings(modality))
    if not parts:
        return None, {}
    meta = read_metadata(parts[0])
    return int(meta.get("dim", 0)) or None, meta


def _check_dims(manifest: Manifest, heads: dict, path: Path) -> None:
    anchor = manifest.train.anchor
    anchor_dim, _ = _store_dim(manifest, anchor)
    for m, head in heads.items():
        d_in, d_out = head[0].in_features, head[-1].out_features
        dim, meta = _store_dim(manifest, m)
        if dim is not None and dim != d_in:
            raise ManifestError(f"modalities.{m}.encoder: the {m} head in {path} takes {d_in}-d inputs but the {m} "
                                f"store is {dim}-d; precompute {m} with EBind's encoder (manifests/ebind.toml)")
        if anchor_dim is not None and anchor_dim != d_out:
            raise ManifestError(f"train.anchor: the heads in {path} map into {d_out}-d but the {anchor} store is "
                                f"{anchor_dim}-d; set train.anchor to the modality of EBind's base space")
        want = EBIND_INPUTS.get(m, {})
        if meta and any(meta.get(k, True) != v for k, v in want.items()):
            log.warning("%s store is normalized=%s but EBind's %s head expects %s inputs; see manifests/ebind.toml",
                        m, meta.get("normalized"), m, want)


def run(manifest: Manifest, path: str, run: str = DEFAULT_RUN) -> dict[str, Any]:
    """Import EBind-layout heads from ``path`` into ``runs/<run>/``; return a summary."""
    source = Path(path).expanduser()
    if not run.strip() or "/" in run:
        raise ManifestError(f"--run: {run!r} is not a run name; give a folder name like {DEFAULT_RUN}")
    try:
        heads = read_ebind_heads(source)
    except FileNotFoundError as exc:
        raise ManifestError(f"import-heads PATH: {exc}; give the ebind-full safetensors file") from None
    except HeadsLayoutError as exc:
        raise ManifestError(f"import-heads PATH: {exc}") from None
    _check_dims(manifest, heads, source)
    run_dir = manifest.layout.run(run).root
    config = {"manifest": manifest.to_dict(), "imported": {"format": FORMAT, "path": str(source),
                                                           "sha256": file_sha256(source)}}
    save_heads(run_dir, heads, config, space=manifest.train.anchor)
    params = sum(p.numel() for h in heads.values() for p in h.parameters())
    log.info("imported %d EBind head(s) (%s, %d parameters) into %s", len(heads), ", ".join(heads), params, run_dir)
    layers = {m: [[layer.in_features, layer.out_features] for layer in h if isinstance(layer, torch.nn.Linear)]
              for m, h in heads.items()}
    return {"run": run, "run_dir": str(run_dir), "heads": layers, "parameters": params,
            "anchor": manifest.train.anchor}
