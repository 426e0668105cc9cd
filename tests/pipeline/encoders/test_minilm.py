"""minilm-l6: all-MiniLM-L6-v2 loads offline from its package and pools like sentence-transformers."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.core.manifest import TextConfig
from pipeline.encoders import minilm
from pipeline.encoders.base import EncoderError


@pytest.fixture(scope="module")
def encoder():
    return minilm.build("text", TextConfig(encoder="minilm-l6"))


def embed(encoder, texts):
    return F.normalize(encoder.features(texts), dim=-1)


def test_semantics(encoder):
    v = embed(encoder, ["A cat sits on the mat.", "A kitten is resting on a rug.",
                        "The stock market fell sharply today.", "Shares dropped on Wall Street."])
    sims = v @ v.T
    assert v.shape == (4, 384) and encoder.dim == 384
    assert sims[0, 1] > sims[0, 2] + 0.3 and sims[0, 1] > sims[0, 3] + 0.3
    assert sims[2, 3] > sims[2, 0] + 0.3


def test_padding_does_not_change_the_embedding(encoder):
    alone = embed(encoder, ["A frog."])
    padded = embed(encoder, ["A frog.", "A much longer sentence that forces padding of the short one."])
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


def test_mean_pool_ignores_masked_tokens():
    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert minilm.mean_pool(states, mask).tolist() == [[2.0, 3.0]]


def test_truncation_and_provenance(encoder):
    batch = encoder.preprocessor()(["word " * 1000])
    assert batch["input_ids"].shape[1] == 256 == encoder.provenance()["max_seq_length"]
    assert encoder.digest().startswith("sha256:")


def test_other_modalities_are_refused():
    with pytest.raises(EncoderError, match="text"):
        minilm.build("image", TextConfig(encoder="minilm-l6"))
