"""``bundle.json`` as dataclasses: what a published bundle holds, written by the stage, read by the card and verify.

The file format is ``bindery-bundle-v1`` (``docs/publish.md``); :meth:`Bundle.to_dict` writes
exactly its keys in its order and :meth:`Bundle.from_dict` reads any bundle of that format,
old ones included. ``pair_summary`` (the pair stage's ``summary.json``) and ``manifest``
(``Manifest.to_dict()``) are other stages' documents, kept as they are.

Needs nothing beyond the standard library: a bundle can be read without pyarrow.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

FORMAT = "bindery-bundle-v1"


class BundleError(RuntimeError):
    """A bundle that cannot be written, checked or uploaded; the message names the file or key."""


@dataclass(frozen=True)
class StoreInfo:
    """What made an embedding table's vectors (embedding stores and the class embeddings)."""

    modality: str
    dim: int
    dtype: str  # float16 | float32
    encoder: str
    digest: str  # the encoder's weights digest ("" when the store did not record one)
    metadata: dict[str, Any]  # the store's ``bindery.*`` Parquet metadata, prefix dropped


@dataclass(frozen=True)
class TableSpec:
    """One table folder of the bundle: its Parquet files and what they hold."""

    kind: str  # embeddings | classes | samples | neighbors | quintuples
    config: str  # its ``datasets`` config name on the card
    files: list[str]  # relative posix paths, in row order
    rows: int
    columns: dict[str, str]  # column -> arrow type, as ``str(field.type)``
    num_bytes: int  # uncompressed bytes of every row group
    download_size: int  # bytes on disk
    features: list[dict[str, Any]]  # the columns in the ``datasets`` YAML features format
    store: StoreInfo | None = None  # embedding tables only

    @property
    def modality(self) -> str:
        return self.store.modality if self.store else ""

    @property
    def encoder(self) -> str:
        return self.store.encoder if self.store else ""

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "store"}
        return {**out, **(asdict(self.store) if self.store else {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableSpec:
        store = StoreInfo(**{f.name: data[f.name] for f in fields(StoreInfo)}) if "modality" in data else None
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name != "store"}, store=store)


@dataclass(frozen=True)
class IndexSpec:
    """A FAISS index of a target modality; row i of ``keys`` is the key of FAISS id i."""

    index: str
    keys: str
    ntotal: int


@dataclass(frozen=True)
class HeadsSpec:
    """A run's exported heads copied into the bundle."""

    run: str
    files: list[str]


@dataclass(frozen=True)
class SourceLicence:
    """Samples that share a licence, attribution and url (one row of the card's licence table)."""

    source: str
    license: str
    attribution: str
    url: str
    samples: int


@dataclass(frozen=True)
class Bundle:
    name: str
    created: str  # ISO time, UTC
    query: str  # the pair stage's query modality
    tables: dict[str, TableSpec]  # folder -> table, in publishing order
    indexes: dict[str, IndexSpec] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    heads: HeadsSpec | None = None
    status: dict[str, dict[str, int]] = field(default_factory=dict)  # modality -> status -> samples
    pair_summary: dict[str, Any] = field(default_factory=dict)
    sources: list[SourceLicence] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    random_weights: list[str] = field(default_factory=list)  # stores encoded with weights = "random"
    emm1: dict[str, Any] = field(default_factory=dict)  # the E-MM1-layout tables (publish.emm1), if written
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "name": self.name, "created": self.created, "query": self.query,
                "tables": {n: t.to_dict() for n, t in self.tables.items()},
                "indexes": {m: asdict(i) for m, i in self.indexes.items()}, "figures": list(self.figures),
                "heads": asdict(self.heads) if self.heads else {}, "status": self.status,
                "pair_summary": self.pair_summary, "sources": [asdict(s) for s in self.sources],
                "manifest": self.manifest,
                # written only when present, so a bundle without them keeps the v1 file byte for byte
                **({"random_weights": list(self.random_weights)} if self.random_weights else {}),
                **({"emm1": self.emm1} if self.emm1 else {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bundle:
        heads = data.get("heads") or None
        return cls(name=data.get("name", ""), created=data.get("created", ""), query=data.get("query", ""),
                   tables={n: TableSpec.from_dict(t) for n, t in data["tables"].items()},
                   indexes={m: IndexSpec(**i) for m, i in data.get("indexes", {}).items()},
                   figures=list(data.get("figures", [])), heads=HeadsSpec(**heads) if heads else None,
                   status=data.get("status", {}), pair_summary=data.get("pair_summary", {}),
                   sources=[SourceLicence(**s) for s in data.get("sources", [])],
                   manifest=data.get("manifest", {}), random_weights=list(data.get("random_weights", [])),
                   emm1=data.get("emm1", {}), format=data.get("format", FORMAT))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    @classmethod
    def read(cls, path: str | Path) -> Bundle:
        """Read a ``bundle.json``; a file that is not one raises :class:`BundleError` naming it."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleError(f"{path}: not a bindery bundle description ({type(exc).__name__}: {exc})") from None
