"""Grouping and fusion against a hand computation; the run's heads give the bound space."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.core.heads_file import plain_head, save_heads
from pipeline.core.layout import OutputLayout
from pipeline.core.manifest import ManifestError
from pipeline.core.samples import write_metadata
from tests.trainer.analyze.conftest import analyze_manifest, fused_by_hand, planted_listings, write_store
from trainer.analyze.space import fuse, fuse_weights, load_space, read_grouping


def _listings(m):
    return fuse(load_space(m), fuse_weights(m.analyze), read_grouping(m), m.analyze.missing, m.analyze.normalize)


def test_group_key_averages_a_listings_images_before_fusing(tmp_path):
    p = planted_listings(tmp_path, clusters=2, per_cluster=3, dim=5, images=3)
    got = _listings(analyze_manifest(tmp_path))
    assert list(got.keys) == p.listing_keys
    np.testing.assert_allclose(got.vectors, fused_by_hand(p), rtol=1e-5, atol=1e-6)
    assert (got.counts["image"] == 3).all() and (got.counts["text"] == 1).all()
    # the mean of the images, not the images one by one: 0.5 * image_0 + 0.5 * text would differ
    one_image = np.stack([0.5 * p.image[k][0] + 0.5 * p.text[k] for k in p.listing_keys])
    assert not np.allclose(got.vectors, one_image, atol=1e-3)
    assert list(got.labels) == [p.labels[k] for k in p.listing_keys]
    assert list(got.caption_keys) == [f"{k}-t" for k in p.listing_keys]


def test_weights_are_a_weighted_mean_and_normalize_is_l2(tmp_path):
    p = planted_listings(tmp_path, clusters=2, per_cluster=3, dim=5, images=2)
    m = analyze_manifest(tmp_path, fuse=["image:1", "text:3"], normalize=True)
    hand = fused_by_hand(p, (1.0, 3.0))
    np.testing.assert_allclose(_listings(m).vectors, hand / np.linalg.norm(hand, axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)


def test_without_group_key_each_sample_is_a_listing(tmp_path):
    write_store(tmp_path, "image", ["a", "b", "c"], np.eye(3))
    write_store(tmp_path, "text", ["a", "b", "d"], 3 * np.eye(3))
    m = analyze_manifest(tmp_path, group_key="")
    got = _listings(m)
    assert list(got.keys) == ["a", "b"]  # c has no text, d no image: dropped
    np.testing.assert_allclose(got.vectors, [[2, 0, 0], [0, 2, 0]])
    assert got.lacking == {"image": 1, "text": 1}
    got = fuse(load_space(m), {"image": 0.5, "text": 0.5}, read_grouping(m), "reweight", False)
    assert list(got.keys) == ["a", "b", "c", "d"]
    np.testing.assert_allclose(got.vectors[2:], [[0, 0, 1], [0, 0, 3]])  # c: its image alone, d: its text alone


def test_a_listings_label_is_the_majority_of_its_samples(tmp_path):
    write_store(tmp_path, "image", ["x1", "x2", "x3"], np.ones((3, 2)))
    write_store(tmp_path, "text", ["xt"], np.ones((1, 2)))
    write_metadata(OutputLayout(tmp_path), "000000", [
        ("x1", json.dumps({"listing": "X", "label": "cat"})), ("x2", json.dumps({"listing": "X", "label": "dog"})),
        ("x3", json.dumps({"listing": "X", "label": "dog"})), ("xt", json.dumps({"listing": "X"}))])
    assert list(_listings(analyze_manifest(tmp_path)).labels) == ["dog"]


def test_a_run_projects_through_its_heads_and_normalises_the_anchor(tmp_path):
    p = planted_listings(tmp_path, clusters=2, per_cluster=3, dim=5, images=1)
    torch.manual_seed(0)
    head = plain_head([[5, 7], [7, 5]])
    save_heads(OutputLayout(tmp_path).run("r").root, {"image": head}, {}, space="text")
    space = load_space(analyze_manifest(tmp_path, run="r"))
    x = torch.tensor(np.stack([p.image[k][0] for k in p.listing_keys]), dtype=torch.float32)
    want = torch.nn.functional.normalize(head(x), dim=-1).detach().numpy()
    np.testing.assert_allclose(space["image"].vectors, want, rtol=1e-5, atol=1e-6)
    t = np.stack([p.text[k] for k in p.listing_keys])
    np.testing.assert_allclose(space["text"].vectors, t / np.linalg.norm(t, axis=1, keepdims=True), rtol=1e-5)
    assert space["image"].how == "through the image head of run r, L2-normalised"


def test_bad_spaces_are_errors_naming_the_key(tmp_path):
    planted_listings(tmp_path, clusters=2, per_cluster=3, dim=5)
    save_heads(OutputLayout(tmp_path).run("r").root, {"image": plain_head([[5, 5]])}, {}, space="text")
    with pytest.raises(ManifestError, match=r"analyze.query: 'audio' is not in run 'r'"):
        load_space(analyze_manifest(tmp_path, run="r", query=["audio"]))
    with pytest.raises(ManifestError, match="analyze.run: run 'nope' has no exported heads"):
        load_space(analyze_manifest(tmp_path, run="nope"))
    with pytest.raises(ManifestError, match="analyze.fuse: no embedding store for 'points'"):
        load_space(analyze_manifest(tmp_path, fuse=["image:0.5", "points:0.5"]))
    write_store(tmp_path, "audio", ["z"], np.ones((1, 5)), space="other")
    with pytest.raises(ManifestError, match="analyze.run: with no run the stores must be one space"):
        load_space(analyze_manifest(tmp_path, query=["audio"]))
