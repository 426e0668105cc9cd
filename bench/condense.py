"""ImageBindDC's condensation cost: seconds per class-step, and one pass over a large labelled set.

One step of ``bindery condense`` projects, per class and modality, ``batch + per_class`` unit
vectors onto ``frequencies`` random directions and takes the cosine and sine of each product,
so a class-step costs about ``2 x frequencies x (batch + per_class) x dim`` multiply-adds per
modality, plus the cross-product matrices of the joint term (``dim^2 x (batch + per_class)``).
Nothing depends on how many items a class has beyond the batch: the dataset's size only sets how
many steps make one pass over it (``items / (classes x batch)``) and the memory of the stores.

* ``grid``: seconds per class-step of the real loop (:func:`trainer.condense.optimise.condense`)
  as dim, frequencies and batch double, with the ratio each doubling gives;
* ``large``: ``items`` two-modality pairs (1 M x 1024-d by default, float16 as the stores keep
  them) in ``classes`` classes, condensed to ``per_class`` each for the steps one pass over the
  items takes, classes in chunks sized to ``--memory-gb``: wall time and peak RSS.

    python -m bench.condense                      # grid + 1 M x 1024-d (tens of minutes on 2 cores)
    python -m bench.condense --small              # grid + 100 k x 1024-d (minutes)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import resource
import time

import numpy as np
import torch

from pipeline.core.manifest import CondenseConfig
from trainer.condense.optimise import condense
from trainer.condense.sets import LabelledPairs

log = logging.getLogger(__name__)
MODALITIES = ("image", "text")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def labelled(items: int, classes: int, dim: int, seed: int = 0, dtype=np.float16) -> LabelledPairs:
    """``items`` pairs of unit vectors around one centre per class and modality, built in chunks."""
    rng = np.random.default_rng(seed)
    label = np.repeat(np.arange(classes), math.ceil(items / classes))[:items]
    vectors = {}
    for m in MODALITIES:
        centres = rng.standard_normal((classes, dim)).astype(np.float32)
        out = np.empty((items, dim), dtype)
        for i in range(0, items, 1 << 16):
            x = centres[label[i:i + (1 << 16)]] + 2.0 * rng.standard_normal((len(label[i:i + (1 << 16)]), dim),
                                                                           dtype=np.float32)
            out[i:i + (1 << 16)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        vectors[m] = out
    keys = np.array([f"k{i}" for i in range(items)], dtype=object)
    return LabelledPairs(keys, label, [f"c{c}" for c in range(classes)], vectors)


def per_class_step(pairs: LabelledPairs, config: CondenseConfig, per_class: int) -> float:
    result = condense(pairs, config, per_class, progress=False)
    return result.seconds / (config.steps * len(pairs.classes))


def grid(small: bool) -> dict:
    """Seconds per class-step as dim, frequencies and batch double (8 classes, 10 per class)."""
    base = {"dim": 512, "frequencies": 2048, "batch": 128}
    rows = {}
    for name, change in [("base", {}), ("dim x2", {"dim": 1024}), ("frequencies x2", {"frequencies": 4096}),
                         ("batch x2", {"batch": 256})]:
        shape = {**base, **change}
        pairs = labelled(8 * 300, 8, shape["dim"], dtype=np.float32)
        config = CondenseConfig(modalities=MODALITIES, steps=3 if small else 10, frequencies=shape["frequencies"],
                                batch_size=shape["batch"])
        condense(pairs, dataclasses.replace(config, steps=1), 10, progress=False)  # warm-up
        rows[name] = {**shape, "seconds_per_class_step": round(per_class_step(pairs, config, 10), 5)}
    for name in ("dim x2", "frequencies x2", "batch x2"):
        rows[name]["ratio_to_base"] = round(rows[name]["seconds_per_class_step"] / rows["base"]["seconds_per_class_step"], 2)
    return rows


def large(items: int, classes: int, dim: int, per_class: int, batch: int, frequencies: int,
          memory_gb: float) -> dict:
    """One pass over ``items`` pairs: the steps that draw each item about once."""
    start = time.perf_counter()
    pairs = labelled(items, classes, dim)
    build_s = time.perf_counter() - start
    data_gb = sum(v.nbytes for v in pairs.vectors.values()) / 2**30
    steps = max(1, math.ceil(items / (classes * batch)))
    config = CondenseConfig(modalities=MODALITIES, steps=steps, frequencies=frequencies, batch_size=batch,
                            memory_gb=memory_gb)
    result = condense(pairs, config, per_class, progress=True)
    return {"items": items, "classes": classes, "dim": dim, "dtype": "float16", "per_class": per_class,
            "batch": batch, "frequencies": frequencies, "memory_gb_budget": memory_gb, "steps": steps,
            "class_chunks_per_step": result.chunks, "data_gb": round(data_gb, 2), "build_s": round(build_s, 1),
            "condense_s": round(result.seconds, 1), "seconds_per_step": round(result.seconds / steps, 2),
            "seconds_per_class_step": round(result.seconds / (steps * classes), 5),
            "loss_first": round(result.curves.total[0], 4), "loss_last": round(result.curves.total[-1], 4),
            "peak_rss_gb": round(peak_rss_gb(), 2), "torch_threads": torch.get_num_threads()}


def measure(small: bool, device: str = "cpu") -> dict:
    items = 100_000 if small else 1_000_000
    return {"grid": grid(small), "large": large(items, 1000, 1024, 10, 256, 4096, 2.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="100 k items instead of 1 M, fewer grid steps")
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--items", type=int, default=0, help="override the large run's item count")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--frequencies", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--memory-gb", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = {} if args.skip_grid else {"grid": grid(args.small)}
    print(json.dumps(out, indent=2), flush=True)
    items = args.items or (100_000 if args.small else 1_000_000)
    out["large"] = large(items, args.classes, args.dim, 10, args.batch, args.frequencies, args.memory_gb)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
