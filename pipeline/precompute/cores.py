"""How a rank splits its CPU cores between DataLoader workers and the encoder's torch threads.

On a GPU the encoder does not need the CPU: every core but one decodes (``min(8, cores - 1)``
workers, the rule of old). On the CPU both sides compete for the same cores, and a fixed rule
starves one of them: 2 workers on 2 cores leave the encoder 1 thread, although decoding small
images costs a few ms against the encoder's hundred. So with ``num_workers = -1`` a short
calibration measures, on the first shard's first samples, the CPU cost per sample of each side:

* ``decode_ms`` -- decode + preprocess, one thread (what a worker spends);
* ``encode_ms`` -- device preparation + forward, CPU time over all the encoder's threads;

and picks the split that the two costs predict to be fastest for ``cores`` cores:

* ``w >= 1`` workers beside ``cores - w`` encoder threads: ``min(w / decode, (cores - w) / encode)``;
* no workers (decode in the main process between encoder calls, which get every core):
  ``1 / (decode + encode / cores)``.

Workers beyond the rank's shard count would idle, so they are never chosen. An explicit
``num_workers`` or ``OMP_NUM_THREADS`` is kept as given. The choice goes into precompute.json.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

import torch

log = logging.getLogger(__name__)

CALIBRATION_SAMPLES = 16  # samples decoded and encoded per modality to measure the two costs


@dataclass(frozen=True)
class CoreSplit:
    """The chosen split and why (an entry of precompute.json's ``ranks``)."""

    workers: int  # DataLoader workers
    threads: int  # the encoder's torch intra-op threads
    cores: int  # CPU cores of this rank
    rule: str  # "calibrated" | "gpu" | "num_workers" (set in the manifest) | "OMP_NUM_THREADS" | "ray" (an actor's)
    decode_ms: float | None = None  # calibration: decode + preprocess CPU ms per sample
    encode_ms: float | None = None  # calibration: prepare + encode CPU ms per sample
    predicted_per_s: float | None = None  # calibration: samples/s the costs predict for this split

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cores_per_rank(world: int) -> int:
    return max(1, (os.cpu_count() or 2) // max(world, 1))


def predicted_rate(workers: int, cores: int, decode_s: float, encode_s: float) -> float:
    """Samples/s of a split, from the per-sample CPU costs of the two sides."""
    if workers == 0:
        return 1.0 / (decode_s + encode_s / cores)
    return min(workers / decode_s, max(cores - workers, 1) / encode_s)


def best_split(cores: int, shards: int, decode_s: float, encode_s: float) -> tuple[int, float]:
    """(workers, predicted samples/s) of the fastest split; fewer workers on a tie."""
    decode_s, encode_s = max(decode_s, 1e-9), max(encode_s, 1e-9)
    options = range(0, max(1, min(cores - 1, shards)) + 1)
    best = max(options, key=lambda w: (round(predicted_rate(w, cores, decode_s, encode_s), 9), -w))
    return best, predicted_rate(best, cores, decode_s, encode_s)


def measure_costs(samples: Sequence[dict[str, Any]], plans: Mapping[str, Any], encoders: Mapping[str, Any],
                  decode: Any) -> tuple[float, float]:
    """(decode + preprocess, prepare + encode) CPU seconds per sample, summed over the modalities.
    ``decode(sample, modality, plan)`` is the loader's decoder (None for a bad member)."""
    decode_s = encode_s = 0.0
    threads = torch.get_num_threads()
    try:
        for m, plan in plans.items():
            torch.set_num_threads(1)  # a worker's single thread
            t0 = time.process_time()
            items = [x for x in (decode(s, m, plan) for s in samples) if x is not None]
            if not items:
                continue
            batch = torch.utils.data.default_convert(plan.preprocess(items))  # as the loader hands it over
            decode_s += (time.process_time() - t0) / len(items)
            torch.set_num_threads(threads)
            encoders[m](batch)  # warm-up: first calls allocate and pick kernels
            t0 = time.process_time()
            encoders[m](batch)
            encode_s += (time.process_time() - t0) / len(items)
    finally:
        torch.set_num_threads(threads)
    return decode_s, encode_s


def choose_split(setting: int, world: int, device: torch.device, shards: int,
                 costs: Any = None) -> CoreSplit:
    """The split for this rank; ``costs()`` -> (decode_s, encode_s) runs the calibration when it is needed."""
    cores = cores_per_rank(world)
    if device.type != "cpu":
        workers = setting if setting >= 0 else max(1, min(8, cores - 1))
        return CoreSplit(workers, torch.get_num_threads(), cores, "gpu" if setting < 0 else "num_workers")
    if "OMP_NUM_THREADS" in os.environ:
        workers = setting if setting >= 0 else max(1, min(8, cores - 1))
        return CoreSplit(workers, torch.get_num_threads(), cores, "OMP_NUM_THREADS")
    if setting >= 0:
        return CoreSplit(setting, max(1, cores - setting) if setting else cores, cores, "num_workers")
    if costs is None or cores == 1:
        return CoreSplit(0, cores, cores, "calibrated")
    decode_s, encode_s = costs()
    if encode_s <= 0:  # nothing decodable in the first shard: keep the encoder whole
        return CoreSplit(0, cores, cores, "calibrated", round(1000 * decode_s, 3), 0.0)
    workers, rate = best_split(cores, shards, decode_s, encode_s)
    split = CoreSplit(workers, max(1, cores - workers) if workers else cores, cores, "calibrated",
                      round(1000 * decode_s, 3), round(1000 * encode_s, 3), round(rate, 2))
    log.info("cores: %d workers, %d encoder threads (decode %.2f ms, encode %.2f ms per sample)",
             split.workers, split.threads, 1000 * decode_s, 1000 * encode_s)
    return split


def first_samples(url: str, count: int = CALIBRATION_SAMPLES) -> list[dict[str, Any]]:
    """The first ``count`` complete samples of a shard (fewer if it is short or faulty)."""
    from pipeline.ingest.shards import ShardFault, iter_samples

    samples = iter_samples(url)
    try:
        return [s for s in islice(samples, count) if not isinstance(s, ShardFault)]
    finally:
        samples.close()
