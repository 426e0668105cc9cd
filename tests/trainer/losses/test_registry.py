"""The loss registry builds the named loss and refuses unknown names naming the key."""

import pytest

from pipeline.core.manifest import ManifestError
from trainer.losses.infonce import BindLoss
from trainer.losses.registry import make_loss


def test_unknown_loss_is_a_manifest_error():
    with pytest.raises(ManifestError, match="train.loss"):
        make_loss("nope", modalities=["audio"], dim=4)


def test_infonce_is_built_with_its_options():
    loss = make_loss("infonce", modalities=["audio", "points"], dim=4, queue_size=3)
    assert isinstance(loss, BindLoss)
    assert loss.modalities == ["audio", "points"] and tuple(loss.queues["audio"].features.shape) == (3, 4)
