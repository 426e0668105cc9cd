"""`bindery` command line: one sub-command per stage, each taking a manifest.

The CLI is the composition root: it names each stage's entry point as ``module:function``
and imports it only when that stage runs, so the pipeline package never imports the trainer.
Every entry point takes a checked :class:`~pipeline.core.manifest.Manifest` and returns a
JSON-able summary, printed at the end.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from pipeline.core.manifest import ManifestError, load
from pipeline.core.store import StoreError, WriteError
from pipeline.encoders.base import EncoderError
from pipeline.publish.verify import BundleError

STAGES = {
    "precompute": ("pipeline.precompute.stage:run", "encode every shard's modalities into Parquet stores"),
    "pair": ("pipeline.pair.stage:run", "auto-pair items across modalities with nearest-neighbour search"),
    "bridge": ("trainer.bridge.stage:run", "BrokenBind: pseudo partners for two modalities that never co-occur"),
    "train": ("trainer.train:run", "fit projection heads on the cached vectors"),
    "eval": ("trainer.eval.evaluate:run", "Recall@K, zero-shot and EShot metrics of a run"),
    "analyze": ("trainer.analyze.stage:run", "fuse, reduce, cluster, score and map a bound space (Hamara & Rivas)"),
    "condense": ("trainer.condense.stage:run", "ImageBindDC: condense labelled pairs into a few synthetic pairs per class"),
    "condense-eval": ("trainer.condense.report:run", "train on the condensed sets, test on real held-out pairs"),
    "publish": ("pipeline.publish.stage:run", "write a self-describing dataset bundle"),
    "import-heads": ("pipeline.heads.stage:run", "load EBind-layout heads (ebind-full safetensors) into a run"),
}


def _entry(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bindery", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text)
        if name == "publish":
            p.add_argument("manifest", nargs="?", help="manifest TOML (omit with --verify)")
            p.add_argument("--verify", metavar="DIR", help="re-check an existing bundle and name the first problem")
            p.add_argument("--upload", action="store_true", help="upload to publish.repo_id (needs HF_TOKEN)")
        elif name == "import-heads":
            p.add_argument("path", help="EBind-layout heads safetensors (projectors.<m>.net.<i>.*)")
            p.add_argument("manifest", help="manifest TOML whose output folder gets the run")
            p.add_argument("--run", default="ebind-full", help="run name under <output>/runs/ (default ebind-full)")
        else:
            p.add_argument("manifest", help="manifest TOML, e.g. manifests/demo.toml")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a manifest key, e.g. --set pair.k=32 (repeatable)")
    return parser


class _TqdmSafeHandler(logging.StreamHandler):
    """Log lines that do not tear tqdm's progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            super().emit(record)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _TqdmSafeHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler], force=True)
    try:
        if args.command == "publish" and args.verify:
            result = _entry("pipeline.publish.stage:verify")(args.verify)
        else:
            if args.manifest is None:
                raise ManifestError("manifest: required; pass a manifest TOML, e.g. manifests/demo.toml")
            manifest = load(args.manifest, args.overrides)
            kwargs = {"upload": args.upload} if args.command == "publish" else {}
            if args.command == "import-heads":
                kwargs = {"path": args.path, "run": args.run}
            result = _entry(STAGES[args.command][0])(manifest, **kwargs)
    except (ManifestError, EncoderError) as exc:
        print(f"bindery {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (BundleError, StoreError, WriteError) as exc:
        print(f"bindery {args.command}: error: {exc}", file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
