"""The output contract in one place: every path under ``dataset.output``, and inside a bundle.

No other module spells a path segment of the contract (``embeddings/``, ``status/``,
``pairs/``, ``runs/``, ...); they ask an :class:`OutputLayout`. A test greps the source tree
and fails when one appears elsewhere. The layout (DESIGN.md, "Contracts")::

    <output>/embeddings/<m>/part-<shard>.parquet     the embedding store
    <output>/status/<m>/part-<shard>.parquet         one row per sample without an embedding
    <output>/metadata/part-<shard>.parquet           key, json (and member digests) per sample
    <output>/classes/text.parquet                    class names embedded by the text encoder
    <output>/faults/<shard>.json                     a shard's last read fault
    <output>/precompute.json                         what the last precompute run did
    <output>/pairs/...                               neighbours, quintuples, chunks, indexes, summary
    <output>/runs/<run>/...                          heads, config, metrics, checkpoints
    <output>/bridge/<name>/                          BrokenBind pseudo stores (a store layout)
    <output>/condensed/<name>-<n>/                   ImageBindDC synthetic stores (a store layout), n per class
    <output>/condensed/<name>/report.json            ImageBindDC's report: trained on the sets, tested on real
    <output>/analysis/<name>/                        fused-embedding analysis
    <output>/publish/                                the default bundle folder
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def part_name(shard_id: str) -> str:
    """A part's file name: one per (shard, modality)."""
    return f"part-{shard_id}.parquet"


PART_GLOB = "part-*.parquet"


@dataclass(frozen=True)
class PairsLayout:
    root: Path

    # the pair tables, in the order they are written and published
    TABLES = ("neighbors", "quintuples")

    @property
    def neighbors(self) -> Path:
        return self.root / "neighbors.parquet"

    @property
    def quintuples(self) -> Path:
        return self.root / "quintuples.parquet"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def chunks(self) -> Path:
        return self.root / "chunks"

    def chunk(self, index: int) -> Path:
        return self.chunks / f"chunk-{index:06d}.parquet"

    @property
    def chunk_params(self) -> Path:
        return self.chunks / "params.json"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    def index(self, modality: str) -> Path:
        return self.index_dir / f"{modality}.faiss"

    def index_keys(self, modality: str) -> Path:
        return self.index_dir / f"{modality}.keys.parquet"

    def chunk_files(self) -> list[Path]:
        """The finished chunks on disk, in order."""
        return sorted(self.chunks.glob("chunk-*.parquet"))

    def indexed_modalities(self) -> list[str]:
        """Modalities with a saved FAISS index, sorted."""
        return sorted(p.name.removesuffix(".faiss") for p in self.index_dir.glob("*.faiss"))

    def histogram(self, modality: str) -> Path:
        return self.root / f"scores_{modality}.png"

    def histograms(self) -> list[Path]:
        """Every score histogram on disk, sorted."""
        return sorted(self.root.glob("scores_*.png"))

    def table(self, name: str) -> Path:
        """``neighbors`` or ``quintuples``."""
        return self.root / f"{name}.parquet"


HEADS_FILE = "heads.safetensors"
RUN_CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def heads(self) -> Path:
        return self.root / HEADS_FILE

    @property
    def config(self) -> Path:
        return self.root / RUN_CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        """The training state saved after ``step`` steps (``trainer_state.json`` marks it complete)."""
        return self.checkpoints / f"step_{step:08d}"

    CHECKPOINT_GLOB = "step_*"

    @staticmethod
    def checkpoint_step(path: Path) -> int:
        """The step a :meth:`checkpoint` folder was saved at."""
        return int(path.name.split("_")[1])

    @property
    def first_fit(self) -> RunLayout:
        """With ``train.refit``: the heads of the first fit, which never saw the early-stopping slice (a
        warm start scores its start on that slice, so it starts from these)."""
        return RunLayout(self.root / "first-fit")

    @property
    def ebind_heads(self) -> Path:
        """The heads again in EBind's released layout (``train.export_ebind``)."""
        return self.root / "ebind-heads.safetensors"

    @property
    def log(self) -> Path:
        """The training log (``step,name,value`` rows)."""
        return self.root / "train_log.csv"

    @property
    def validation_curve(self) -> Path:
        """The early-stopping validation curve (PNG)."""
        return self.root / "validation_curve.png"

    def file(self, name: str) -> Path:
        return self.root / name

    # the files a bundle copies from a run, in order
    PUBLISHED = (HEADS_FILE, RUN_CONFIG_FILE, METRICS_FILE)


@dataclass(frozen=True)
class AnalysisLayout:
    root: Path

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def clusters(self) -> Path:
        return self.root / "clusters.parquet"

    def plot(self, name: str) -> Path:
        return self.root / f"{name}.png"


@dataclass(frozen=True)
class CondenseReportLayout:
    """``<output>/condensed/<name>/``: the report over every size of one condensation."""

    root: Path

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    def plot(self, name: str) -> Path:
        return self.root / f"{name}.png"

    def work(self, name: str) -> OutputLayout:
        """A scratch store the report trains on (e.g. the real pairs in the condensation space)."""
        return OutputLayout(self.root / name)


@dataclass(frozen=True)
class OutputLayout:
    """Every path of one output folder. Derived stores (bridge, condensed) are layouts themselves."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    # -- stores
    @property
    def embeddings_root(self) -> Path:
        return self.root / "embeddings"

    def embeddings(self, modality: str) -> Path:
        return self.embeddings_root / modality

    def status(self, modality: str) -> Path:
        return self.root / "status" / modality

    def embedding_part(self, modality: str, shard_id: str) -> Path:
        return self.embeddings(modality) / part_name(shard_id)

    def status_part(self, modality: str, shard_id: str) -> Path:
        return self.status(modality) / part_name(shard_id)

    @property
    def metadata(self) -> Path:
        return self.root / "metadata"

    def metadata_part(self, shard_id: str) -> Path:
        return self.metadata / part_name(shard_id)

    @property
    def classes(self) -> Path:
        return self.root / "classes" / "text.parquet"

    @property
    def faults(self) -> Path:
        return self.root / "faults"

    def fault_marker(self, shard_id: str) -> Path:
        return self.faults / f"{shard_id}.json"

    @property
    def precompute_summary(self) -> Path:
        return self.root / "precompute.json"

    @property
    def lock(self) -> Path:
        return self.root / ".bindery.lock"

    def slice_lock(self, index: int, count: int) -> Path:
        """Held by the precompute run of Slurm array slice ``index`` of ``count`` (beside a shared ``lock``)."""
        return self.root / f".bindery.lock.slice-{index}-of-{count}"

    @property
    def dedupe_marker(self) -> Path:
        """What the stores looked like after the last duplicate-key pass (the pass is skipped if unchanged)."""
        return self.root / ".dedupe.json"

    # -- later stages
    @property
    def pairs(self) -> PairsLayout:
        return PairsLayout(self.root / "pairs")

    @property
    def runs_root(self) -> Path:
        return self.root / "runs"

    def run(self, name: str) -> RunLayout:
        return RunLayout(self.runs_root / name)

    def bridge(self, name: str) -> OutputLayout:
        return OutputLayout(self.root / "bridge" / name)

    def condensed(self, name: str) -> OutputLayout:
        return OutputLayout(self.root / "condensed" / name)

    def condensed_set(self, name: str, per_class: int) -> OutputLayout:
        """One condensed set: ``condensed/<name>-<per_class>/``."""
        return self.condensed(f"{name}-{per_class}")

    def condensed_report(self, name: str) -> CondenseReportLayout:
        return CondenseReportLayout(self.root / "condensed" / name)

    @property
    def condensed_root(self) -> Path:
        return self.root / "condensed"

    def analysis(self, name: str) -> AnalysisLayout:
        return AnalysisLayout(self.root / "analysis" / name)

    def plot(self, name: str) -> Path:
        """A figure at the top of a derived store (e.g. a condensed set's loss curves)."""
        return self.root / f"{name}.png"

    @property
    def derived_config(self) -> Path:
        """``config.json`` of a derived store (bridge, condensed): how it was made."""
        return self.root / "config.json"

    @property
    def publish_default(self) -> Path:
        return self.root / "publish"


@dataclass(frozen=True)
class BundleLayout:
    """Paths inside a published bundle (relative names, as bundle.json and the card spell them)."""

    root: Path

    BUNDLE_JSON = "bundle.json"
    CHECKSUMS = "checksums.sha256"
    CARD = "README.md"

    @staticmethod
    def embeddings(modality: str) -> str:
        return f"embeddings/{modality}"

    CLASSES = "classes"
    SAMPLES = "samples"
    PROVENANCE = "provenance"
    FIGURES = "figures"
    HEADS = "heads"
    INDEX = "index"

    @staticmethod
    def pairs(table: str) -> str:
        return f"pairs/{table}"

    @staticmethod
    def heads(run: str, name: str = "") -> str:
        """``heads/<run>`` (the folder) or ``heads/<run>/<name>`` (one of the run's files)."""
        return f"{BundleLayout.HEADS}/{run}/{name}" if name else f"{BundleLayout.HEADS}/{run}"

    @staticmethod
    def index(name: str) -> str:
        """A file of ``index/``: ``<m>.faiss`` or ``<m>.keys.parquet``."""
        return f"{BundleLayout.INDEX}/{name}"

    @staticmethod
    def figure(name: str) -> str:
        return f"{BundleLayout.FIGURES}/{name}"

    @staticmethod
    def provenance(name: str) -> str:
        return f"{BundleLayout.PROVENANCE}/{name}"

    EMM1 = "emm1"  # the pairs in E-MM1's table layout (publish.emm1)

    @staticmethod
    def emm1_groups(k: int) -> str:
        return f"emm1/nn_{k}/data_groups.csv"

    @staticmethod
    def emm1_info(modality: str) -> str:
        return f"emm1/infos/{modality}.csv"

    def path(self, relative: str) -> Path:
        return self.root / relative
