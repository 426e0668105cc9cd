"""The dataset card (``README.md``) of a published bundle.

The YAML header is what the Hugging Face Hub reads: one ``configs`` entry per table with its
``data_files``, ``dataset_info`` features in the ``datasets`` YAML format, ``license``,
``task_categories`` and tags. The body says what is in the bundle and how it was made, from
``bundle.json`` alone, so the card never disagrees with the files.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from pipeline.core.layout import BundleLayout, OutputLayout
from pipeline.core.samples import iter_sample_metadata
from pipeline.publish.bundle import Bundle, SourceLicence

NEIGHBORS = BundleLayout.pairs("neighbors")
QUINTUPLES_FILES = f"{BundleLayout.pairs('quintuples')}/*.parquet"

_MADE = {
    "embeddings": "the `{modality}` members of every sample, decoded and passed once through the frozen "
                  "encoder `{encoder}`; one row per sample that has this modality (`key` = the WebDataset "
                  "`__key__`).",
    "classes": "every class name, formatted with `[modalities.text] class_prompt` and embedded by the text "
               "encoder `{encoder}`, L2-normalised; used for zero-shot evaluation.",
    "samples": "the raw `json` member of every sample (\"\" when it had none): labels, source, licence.",
    "neighbors": "exact or FAISS k-nearest-neighbour search from each `{query}` item into every other "
                 "store (cosine score), after the thresholds, mutual-kNN and hub limits below; `rank` 0 is "
                 "the best.",
    "quintuples": "one row per `{query}` query: its best neighbour (`<modality>_key`, `<modality>_score`) in "
                  "each target modality; null where no neighbour passed the filters.",
}

_ARROW_TO_DTYPE = {"string": "string", "large_string": "large_string", "halffloat": "float16",
                   "float": "float32", "double": "float64", "int32": "int32", "int64": "int64",
                   "int16": "int16", "int8": "int8", "bool": "bool"}


def _source_label(prefix: str | None, examples: set[str]) -> str:
    """One source's name for the card: the common value, else the common prefix of its samples' sources."""
    if not examples:
        return ""
    if len(examples) == 1:
        return next(iter(examples))
    if prefix:
        return f"{prefix}*"
    return ", ".join(sorted(examples)[:3]) + ", ..."


class _SourceGroup:
    """Samples of one (licence, attribution, url): how many, and the common prefix of their sources."""

    def __init__(self) -> None:
        self.samples = 0
        self.prefix: str | None = None
        self.examples: set[str] = set()

    def add(self, source: str) -> None:
        self.samples += 1
        if source:
            self.prefix = source if self.prefix is None else os.path.commonprefix([self.prefix, source])
            if len(self.examples) < 4:
                self.examples.add(source)


def source_licences(layout: OutputLayout, default_license: str) -> list[SourceLicence]:
    """Samples per (licence, attribution, url) from the samples' json; no licence -> the default.

    A sample's ``source`` is often per item (a path); samples that share licence, attribution and
    url are one source, named by their sources' common prefix (``debian:tuxpaint:/usr/share/*``).
    """
    groups: dict[tuple[str, str, str], _SourceGroup] = {}
    for _, meta in iter_sample_metadata(layout):
        lic, attribution, url, source = (str(meta.get(f) or "") for f in ("license", "attribution", "url", "source"))
        groups.setdefault((lic or default_license, attribution, url), _SourceGroup()).add(source)
    rows = [SourceLicence(_source_label(g.prefix, g.examples), lic, attribution, url, g.samples)
            for (lic, attribution, url), g in sorted(groups.items())]
    return rows or [SourceLicence("", default_license, "", "", 0)]


def hub_license(text: str) -> str:
    """A licence as the Hub's ``license`` field takes it: an id (``cc-by-4.0``), else ``other``."""
    lic = text.strip().lower()
    return lic if re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", lic) else "other"


def feature_yaml(field: pa.Field) -> dict[str, Any]:
    """A column in the ``datasets`` YAML features format (``sequence`` + ``length`` for fixed-size lists)."""
    t = field.type
    if pa.types.is_fixed_size_list(t):
        return {"name": field.name, "sequence": _ARROW_TO_DTYPE[str(t.value_type)], "length": t.list_size}
    if pa.types.is_list(t):
        return {"name": field.name, "sequence": _ARROW_TO_DTYPE[str(t.value_type)]}
    return {"name": field.name, "dtype": _ARROW_TO_DTYPE[str(t)]}


def _type_label(feature: dict[str, Any]) -> str:
    if "sequence" in feature:
        return f"{feature['sequence']}[{feature.get('length', '')}]"
    return feature["dtype"]


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")):
        if n < limit:
            return name
    return "n>1T" if n > 10**12 else "100M<n<1B"


def card_header(bundle: Bundle) -> dict[str, Any]:
    tables = bundle.tables
    licences = sorted({hub_license(s.license) for s in bundle.sources})
    names = [spec.config for spec in tables.values()]
    default = bundle.query if bundle.query in names else names[0] if names else ""
    configs, infos = [], []
    for name, spec in tables.items():
        pattern = f"{name}/*.parquet"
        configs.append({"config_name": spec.config, "data_files": [{"split": "train", "path": pattern}],
                        **({"default": True} if spec.config == default else {})})
        infos.append({"config_name": spec.config, "features": spec.features,
                      "splits": [{"name": "train", "num_bytes": spec.num_bytes, "num_examples": spec.rows}],
                      "download_size": spec.download_size, "dataset_size": spec.num_bytes})
    mods = sorted({s.modality for s in tables.values() if s.kind == "embeddings"})
    return {
        "pretty_name": bundle.name,
        "license": licences[0] if len(licences) == 1 else licences,
        "task_categories": ["feature-extraction"],
        "tags": ["bindery", "embeddings", "multimodal", *mods],
        "size_categories": [_size_category(max((t.rows for t in tables.values()), default=0))],
        "configs": configs,
        "dataset_info": infos,
    }


def _body(bundle: Bundle) -> list[str]:
    out = _intro(bundle)
    out += _tables_section(bundle)
    out += _pairs_section(bundle)
    out += _heads_section(bundle)
    out += _licence_section(bundle)
    return out


def _intro(bundle: Bundle) -> list[str]:
    first = next((c["config_name"] for c in card_header(bundle)["configs"] if c.get("default")), "")
    keys_map = BundleLayout.index("<m>.keys.parquet")
    return [f"# {bundle.name}", "",
            f"Embeddings, cross-modal pairs and indexes made by bindery (bundle format `{bundle.format}`). "
            "Every table is plain Parquet: nothing from bindery is needed to read it.", "",
            "## Load it", "", "```python", "from datasets import load_dataset",
            f'ds = load_dataset("<this repo or folder>", "{first}", split="train")', "",
            "import polars as pl",
            f'df = pl.scan_parquet("{QUINTUPLES_FILES}").collect()  # or any table folder below',
            "", f"import faiss  # the indexes: row i of {keys_map} is FAISS id i",
            f'index = faiss.read_index("{BundleLayout.index("image.faiss")}")', "```", ""]


def _tables_section(bundle: Bundle) -> list[str]:
    out = ["## Tables", "", "| table | config | rows | files | columns | how it was made |", "|---|---|---|---|---|---|"]
    for tname, spec in bundle.tables.items():
        made = _MADE[spec.kind].format(modality=spec.modality, encoder=spec.encoder, query=bundle.query)
        cols = ", ".join(f"`{f['name']}` {_type_label(f)}" for f in spec.features)
        out.append(f"| `{tname}/` | `{spec.config}` | {spec.rows:,} | {len(spec.files)} | {cols} | {made} |")
    out += ["", "## Counts and encoders", "",
            "| modality | embedded | missing | corrupt | error | encoder | weights digest | dim | dtype |",
            "|---|---|---|---|---|---|---|---|---|"]
    for spec in bundle.tables.values():
        if spec.kind == "embeddings" and spec.store:
            st, store = bundle.status.get(spec.modality, {}), spec.store
            out.append(f"| {store.modality} | {spec.rows:,} | {st.get('missing', 0)} | {st.get('corrupt', 0)} "
                       f"| {st.get('error', 0)} | `{store.encoder}` | `{store.digest or 'n/a'}` "
                       f"| {store.dim} | {store.dtype} |")
    return [*out, "", "Samples that have no embedding for a modality were missing it, could not be decoded "
            "(corrupt) or failed in the encoder (error); they are counted above, not silently dropped.", ""]


def _heads_section(bundle: Bundle) -> list[str]:
    heads = bundle.heads
    if not heads:
        return []
    return ["## Projection heads", "",
            f"Run `{heads.run}`: " + ", ".join(f"`{f}`" for f in heads.files) + ". Each head is a plain "
            "Linear-ReLU-Linear stack (safetensors keys `<modality>.<layer>.weight|bias`) whose L2-normalised "
            "output lies in the anchor's space; `config.json` gives the layer sizes.", ""]


def _licence_section(bundle: Bundle) -> list[str]:
    out = ["## Licence and attribution", "", "| source | licence | attribution | url | samples |", "|---|---|---|---|---|"]
    for s in bundle.sources:
        out.append(f"| {s.source or '(unspecified)'} | {s.license} | {s.attribution or '-'} "
                   f"| {s.url or '-'} | {s.samples:,} |")
    return [*out, "", "The licence of each sample is the one its source gave in the sample's metadata; where it "
            "gave none, the dataset's declared licence applies. The embeddings are derived from those samples.", "",
            "## Integrity", "", f"`{BundleLayout.CHECKSUMS}` covers every file (`sha256sum -c {BundleLayout.CHECKSUMS}`); "
            f"`{BundleLayout.BUNDLE_JSON}` lists the tables, row counts, column types and the manifest that made them. "
            "`bindery publish --verify <folder>` re-checks all of it, including that every pair key joins its store.",
            ""]


def _pairs_section(bundle: Bundle) -> list[str]:
    summary = dict(bundle.pair_summary or {})
    params = summary.pop("params", None) or bundle.manifest.get("pair", {})  # what the pair stage used
    if not (summary or bundle.indexes or NEIGHBORS in bundle.tables):
        return []
    out = ["## Pairing", "", f"Query modality: `{bundle.query}`.", "", "| parameter | value |", "|---|---|"]
    out += [f"| {k} | `{json.dumps(v)}` |" for k, v in params.items()]
    scalars = {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
    if scalars:
        out += ["", "| summary | value |", "|---|---|", *[f"| {k} | `{json.dumps(v)}` |" for k, v in scalars.items()]]
    nested = {k: v for k, v in summary.items() if isinstance(v, dict | list)}
    if nested:
        out += ["", "```json", json.dumps(nested, indent=2, default=str), "```"]
    spaces = summary.get("space", {}) if isinstance(summary.get("space"), dict) else {}
    for m, spec in bundle.indexes.items():
        space = spaces.get(m, {}).get("space", m) if isinstance(spaces.get(m), dict) else m
        out.append(f"\nFAISS index of `{m}` (vectors in the `{space}` space): `{spec.index}` "
                   f"({spec.ntotal:,} vectors); row i of `{spec.keys}` is the key of FAISS id i.")
    if bundle.figures:
        out += ["", "### Score histograms", ""]
        out += [f"![{Path(f).stem}]({f})" for f in bundle.figures]
    return [*out, ""]


def render_card(bundle: Bundle) -> str:
    header = yaml.safe_dump(card_header(bundle), sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n\n" + "\n".join(_body(bundle))
