"""Which keys are D1, D2 and evaluation items."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.manifest import ManifestError
from tests.trainer.bridge.conftest import write_bridge_stores
from trainer.bridge.splits import load_split, split_keys


def keys(*names: str) -> np.ndarray:
    return np.array(names, dtype=object)


def test_sets_follow_the_modalities_each_key_has():
    split = split_keys({"text": keys("k1", "k2", "k3", "k4", "k6"), "image": keys("k1", "k3", "k5", "k6"),
                        "audio": keys("k2", "k3", "k4", "k5")}, "text", "image", "audio")
    assert list(split.d1) == ["k1", "k6"]  # image + text, no audio
    assert list(split.d2) == ["k2", "k4"]  # audio + text, no image
    assert list(split.evaluation) == ["k3", "k5"]  # image + audio, with or without text
    assert split.sizes() == {"d1": 2, "d2": 2, "evaluation": 2}
    assert not set(split.training_keys()) & set(split.evaluation)


def test_load_split_reads_the_stores_and_names_what_is_missing(tmp_path):
    pl = write_bridge_stores(tmp_path, n1=20, n2=30, ne=10)
    split = load_split(tmp_path, "text", "image", "audio")
    assert list(split.d1) == list(pl.keys[pl.d1]) and list(split.d2) == list(pl.keys[pl.d2])
    assert list(split.evaluation) == list(pl.keys[pl.evaluation])
    with pytest.raises(ManifestError, match="no embedding store for 'video'"):
        load_split(tmp_path, "text", "image", "video")
    with pytest.raises(ManifestError, match=r"image \+ text without image \(set D1\), so there is nothing"):
        load_split(tmp_path, "text", "image", "image")  # every image key has an image: D1 is empty
