"""The space condensation works in: the raw stores, or a trained run's anchor space.

``condense.space = "store"`` takes each store's vectors as they are (L2-normalised). Any other
value names a run under ``<output>/runs/``: its exported heads (``pipeline.core.heads_file``, the
file any stage may read) map each modality into the run's anchor space, as ImageBind's towers map
every modality into one space in the paper. The anchor and its passthrough modalities are already
there and are only normalised.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.heads_file import load_heads, project
from pipeline.core.manifest import Manifest, ManifestError
from pipeline.core.store import embeddings_dir, list_parts, read_metadata

STORE = "store"
CHUNK = 65536  # rows mapped at once


class Space:
    """Maps one modality's stored vectors into the condensation space."""

    def __init__(self, manifest: Manifest):
        c = manifest.condense
        self.name = c.space
        self.heads: dict[str, torch.nn.Sequential] = {}
        self.same: set[str] = set(c.modalities)  # modalities taken as they are (normalised)
        if c.space == STORE:
            return
        run = manifest.layout.run(c.space)
        if not run.heads.is_file():
            raise ManifestError(f"condense.space: run {c.space!r} has no exported heads ({run.heads}); train it "
                                "with `bindery train --set train.run=...` or set condense.space = \"store\"")
        heads, config = load_heads(run.root)
        passthrough = set(config.get("manifest", {}).get("train", {}).get("anchor_passthrough", []))
        self.same = {config["anchor"], *passthrough} & set(c.modalities)
        missing = [m for m in c.modalities if m not in heads and m not in self.same]
        if missing:
            raise ManifestError(f"condense.space: run {c.space!r} has no head for {missing} (its heads: "
                                f"{sorted(heads)}, anchor {config['anchor']!r}); condense other modalities "
                                "or train a run with heads for them")
        self.heads = {m: h for m, h in heads.items() if m in c.modalities and m not in self.same}

    def map(self, modality: str, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` in the condensation space, float32, unit norm."""
        out = np.empty((len(vectors), self.dim_out(modality, vectors.shape[1])), np.float32)
        head = self.heads.get(modality)
        for i in range(0, len(vectors), CHUNK):
            x = torch.from_numpy(np.array(vectors[i:i + CHUNK], dtype=np.float32))
            out[i:i + CHUNK] = (project(head, x) if head is not None else F.normalize(x, dim=-1)).numpy()
        return out

    def dim_out(self, modality: str, dim_in: int) -> int:
        head = self.heads.get(modality)
        return dim_in if head is None else [m for m in head if isinstance(m, torch.nn.Linear)][-1].out_features

    def store_metadata(self, manifest: Manifest, modality: str, dim: int) -> dict:
        """Parquet metadata of a condensed store of ``modality``: how its vectors were made."""
        source = read_metadata(list_parts(embeddings_dir(manifest.output, modality))[0])
        base = {"encoder": f"condensed:{source.get('encoder')}", "digest": source.get("digest"), "dim": dim,
                "dtype": "float32", "normalized": True, "modality": modality, "condensed_space": self.name}
        if self.name == STORE:
            return {**base, **({"space": source["space"]} if "space" in source else {})}
        return {**base, "space": f"run:{self.name}"}


def check_dims(manifest: Manifest, space: Space) -> None:
    """The cross-modal term multiplies items element-wise: every modality needs the same dim."""
    c = manifest.condense
    dims = {m: space.dim_out(m, read_metadata(list_parts(manifest.layout.embeddings(m))[0])["dim"])
            for m in c.modalities}
    if c.cross_weight > 0 and len(set(dims.values())) > 1:
        raise ManifestError(f"condense.cross_weight: the cross-modal term needs one dim, but in space {c.space!r} "
                            f"the modalities are {dims}; condense in a run's space (condense.space = \"<run>\") "
                            "or set condense.cross_weight = 0")
