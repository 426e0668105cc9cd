"""precompute applies [modalities.<m>] normalize / scale / weights and the store metadata says so."""

import numpy as np
import pytest
import torch

from pipeline.core.manifest import ManifestError, from_dict
from pipeline.core.store import read_store
from pipeline.encoders.base import Encoder, EncoderError
from pipeline.precompute.stage import run


class LengthText(Encoder):
    """Features a test can recompute: (number of characters, number of words, 1)."""

    modality, name, dim, weights = "text", "length-text", 3, "random"

    def preprocessor(self):
        return features

    def encode(self, batch):
        return batch["x"]

    def modules(self):
        return [torch.nn.Linear(1, 1)]


def features(texts):
    return {"x": torch.tensor([[len(t), len(t.split()), 1.0] for t in texts])}


def length_text(modality, config):
    return LengthText()


class NoWeightsKey(LengthText):
    weights = None


def no_weights_key(modality, config):
    return NoWeightsKey()


def manifest(tmp_path, shards, keys: dict, encoder="length_text"):
    return from_dict({"dataset": {"name": "c", "shards": shards, "output": str(tmp_path / "out")},
                      "modalities": {"text": {"encoder": f"tests.pipeline.precompute.test_conventions:{encoder}",
                                              "dtype": "float32", **keys}},
                      "precompute": {"device": "cpu", "num_workers": 0, "trust_code": True}})


@pytest.mark.parametrize("keys,normalized,scale", [({"normalize": False}, False, 1.0), ({"scale": 20.0}, True, 20.0)])
def test_stored_vectors_follow_the_convention(tiny_shards, tmp_path, keys, normalized, scale):
    one = tiny_shards["pattern"].replace("{000000..000003}", "000000")
    run(manifest(tmp_path, one, {**keys, "weights": "random"}))
    store = read_store(tmp_path / "out", "text")
    assert store.metadata["normalized"] is normalized and store.metadata["scale"] == scale
    assert store.metadata["weights"] == "random"
    norms = np.linalg.norm(store.vectors, axis=1)
    if normalized:
        assert np.allclose(norms, scale, atol=1e-4)
    else:  # the raw features (characters, words, 1), not unit vectors
        v = store.vectors
        assert np.allclose(v[:, 2], 1.0) and (v[:, 1] >= 1).all() and (v[:, 0] >= v[:, 1]).all()
        assert np.allclose(v, np.round(v)) and (norms > 1.5).all()


def test_a_changed_convention_never_mixes_a_store(tiny_shards, tmp_path):
    one = tiny_shards["pattern"].replace("{000000..000003}", "000000")
    run(manifest(tmp_path, one, {"scale": 2.0}))
    with pytest.raises(ManifestError, match="scale 2.0 -> 3.0"):
        run(manifest(tmp_path, one, {"scale": 3.0}))


def test_weights_key_on_an_encoder_without_one_is_refused(tiny_shards, tmp_path):
    one = tiny_shards["pattern"].replace("{000000..000003}", "000000")
    with pytest.raises(EncoderError, match="has no weights key"):
        run(manifest(tmp_path, one, {"weights": "random"}, encoder="no_weights_key"))
    with pytest.raises(ManifestError, match="scale: must be > 0"):
        manifest(tmp_path, one, {"scale": 0.0})
