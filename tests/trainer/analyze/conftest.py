"""Planted listings for the analysis tests, written in the store, metadata and shard formats.

``planted_listings`` draws ``clusters`` centres in a ``dim``-d space; every listing of cluster c has
one text vector and ``images`` image vectors, each the centre plus Gaussian noise. Image and text
stores carry one ``space`` key, so with ``analyze.run = ""`` they are one space. Each image is its
own sample (``<listing>-i<j>``) whose json names its listing under ``listing`` and its cluster
under ``label``; the text sample's key is ``<listing>-t``. A shard holds every text sample's caption.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.layout import OutputLayout, part_name
from pipeline.core.manifest import Manifest, from_dict
from pipeline.core.samples import write_metadata
from pipeline.core.store import write_embeddings


@dataclass
class Planted:
    output: Path
    listing_keys: list[str]  # sorted
    labels: dict[str, str]  # listing -> cluster name
    image: dict[str, np.ndarray]  # listing -> (images, dim)
    text: dict[str, np.ndarray]  # listing -> (dim,)
    audio: dict[str, np.ndarray]  # audio sample key -> vector (one per listing: "<listing>-a")


def write_store(output: Path, modality: str, keys: list[str], vectors: np.ndarray, space: str = "planted") -> None:
    write_embeddings(OutputLayout(output).embedding_part(modality, "000000"), keys, vectors, dtype="float32",
                     metadata={"encoder": f"planted-{modality}", "dim": vectors.shape[1], "normalized": False,
                               "dtype": "float32", "space": space})


def write_captions_shard(path: Path, captions: dict[str, str]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, text in sorted(captions.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{key}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def planted_listings(output: Path, clusters: int = 4, per_cluster: int = 30, dim: int = 24, images: int = 2,
                     noise: float = 0.3, seed: int = 0) -> Planted:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)) * 3.0
    keys, labels, image, text, audio = [], {}, {}, {}, {}
    for c in range(clusters):
        for j in range(per_cluster):
            key = f"L{c}{j:03d}"
            keys.append(key)
            labels[key] = f"class{c}"
            image[key] = centres[c] + noise * rng.standard_normal((images, dim))
            text[key] = centres[c] + noise * rng.standard_normal(dim)
            audio[f"{key}-a"] = centres[c] + noise * rng.standard_normal(dim)
    keys.sort()
    img_keys = [f"{k}-i{j}" for k in keys for j in range(images)]
    write_store(output, "image", img_keys, np.concatenate([image[k] for k in keys]))
    write_store(output, "text", [f"{k}-t" for k in keys], np.stack([text[k] for k in keys]))
    write_store(output, "audio", sorted(audio), np.stack([audio[k] for k in sorted(audio)]))
    meta = [(f"{k}{suffix}", json.dumps({"listing": k, "label": labels[k]}))
            for k in keys for suffix in [*(f"-i{j}" for j in range(images)), "-t", "-a"]]
    write_metadata(OutputLayout(output), "000000", meta)
    write_captions_shard(output / "captions-000000.tar", {f"{k}-t": f"a {labels[k]} thing number {k}" for k in keys})
    return Planted(output, keys, labels, image, text, audio)


def analyze_manifest(output: Path, **analyze) -> Manifest:
    raw = {"dataset": {"name": "planted", "shards": str(output / "captions-000000.tar"), "output": str(output)},
           "modalities": {m: {"encoder": f"planted-{m}"} for m in ("image", "text", "audio")},
           "analyze": {"group_key": "listing", "dims": [2, 4, 8], "ks": [3, 4, 5], "map": "pca", **analyze}}
    return from_dict(raw, base=output)


def fused_by_hand(p: Planted, weights: tuple[float, float] = (0.5, 0.5)) -> np.ndarray:
    """(listings, dim): weights[0] * mean of the listing's images + weights[1] * its text, over their sum."""
    wi, wt = weights
    return np.stack([(wi * p.image[k].mean(0) + wt * p.text[k]) / (wi + wt) for k in p.listing_keys])


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def part(output: Path, modality: str) -> Path:
    return OutputLayout(output).embeddings(modality) / part_name("000000")
