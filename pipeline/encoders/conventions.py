"""How an encoder's raw features become stored vectors: a modality's output convention.

``[modalities.<m>]`` has two keys for it:

* ``normalize`` (default true) -- divide each feature vector by its L2 norm;
* ``scale`` (default 1.0) -- then multiply by this fixed factor.

bindery's default stores unit vectors. EBind's released heads expect other inputs
(``../shared/METHODS.md`` section 1): audio is ImageBind's output ``unit(x) * 20``
(``normalize = true, scale = 20``) and points are Uni3D's raw ``pc_feat``
(``normalize = false``). The store metadata's ``normalized`` and ``scale`` say which
convention a store follows, so every reader knows what norm to expect: ``scale`` when
normalised, anything finite and non-zero otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class OutputConvention:
    normalize: bool = True  # L2-normalise each vector
    scale: float = 1.0  # fixed factor applied after the (optional) normalisation

    @staticmethod
    def of(config: Any) -> OutputConvention:
        """The convention a modality section asks for (sections without the keys: unit vectors)."""
        return OutputConvention(bool(getattr(config, "normalize", True)), float(getattr(config, "scale", 1.0)))

    def metadata(self) -> dict[str, Any]:
        """The store-metadata fields that record the convention."""
        return {"normalized": self.normalize, "scale": self.scale}

    def apply(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(stored vectors (B, dim) float32, ok (B,)): a row is not ok when it has a non-finite value or
        is all zeros (a zero vector has no direction, normalised or not)."""
        feats = features.float()
        norms = feats.norm(dim=-1, keepdim=True)
        ok = torch.isfinite(feats).all(dim=-1) & (norms.squeeze(-1) > 0)
        out = feats / norms.clamp(min=1e-12) if self.normalize else feats
        return out * self.scale if self.scale != 1.0 else out, ok


def expected_norm(metadata: dict[str, Any]) -> float | None:
    """The L2 norm every row of a store has by its metadata (None when the rows are unnormalised).
    Stores written before the convention existed carry ``normalized: true`` and no ``scale``: norm 1."""
    if not metadata.get("normalized", True):
        return None
    return float(metadata.get("scale", 1.0))
