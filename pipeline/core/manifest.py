"""The manifest: a TOML file read into frozen dataclasses.

Every key is checked before any work starts. An unknown key, a missing required key or a
value of the wrong type raises :class:`ManifestError`, whose message names the dotted key
and says what is allowed. ``--set a.b=c`` overrides go through the same checks.

Each section is a dataclass; its fields are the allowed keys, its type hints the allowed
types, and an optional ``CHOICES`` mapping narrows string fields to a fixed set.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.layout import OutputLayout

MODALITIES = ("image", "text", "video", "audio", "points")


class ManifestError(ValueError):
    """A bad manifest or override; the message names the key and the fix."""


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DatasetConfig:
    name: str  # a short name, used in stores' metadata and the published card
    shards: str  # brace pattern of WebDataset tars: local path, or `pipe:<shell command>` (bindery runs that command, as webdataset does)
    output: str  # output folder for stores, status, pairs and runs
    license: str = "unknown"  # licence of the source data, copied into the dataset card


@dataclass(frozen=True)
class ModalityConfig:
    """Keys every modality has."""

    encoder: str  # registered name (built-in or a `bindery.encoders` entry point), `hf:<repo-or-path>`, or `module:function` (needs precompute.trust_code)
    batch_size: int = 64  # samples per encoder call
    dtype: str = "float16"  # storage dtype of the embeddings
    normalize: bool = True  # L2-normalise the encoder's features before storing (EBind's points: false)
    scale: float = 1.0  # fixed factor applied after normalising (EBind's audio: 20)
    weights: str = ""  # "" = the encoder's own source (its package, or the hub when reachable); a local file or folder; or "random" (recorded in the store, refused by publish)
    CHOICES: typing.ClassVar[dict[str, tuple[str, ...]]] = {"dtype": ("float16", "float32")}


@dataclass(frozen=True)
class ImageConfig(ModalityConfig):
    max_pixels: int = 64_000_000  # decoded images larger than this are a status row
    background: str = "white"  # colour transparent pixels (RGBA, LA, palette transparency) are composited onto
    decode: str = "auto"  # JPEG decoding: auto (batched on the GPU when the encoder runs on CUDA, torchvision imports and the encoder's preprocessing is a resize-crop-normalise; else Pillow in the workers) | cpu (Pillow in the workers) | device (the GPU path, or a ManifestError at start)
    CHOICES: typing.ClassVar[dict[str, tuple[str, ...]]] = {**ModalityConfig.CHOICES, "decode": ("auto", "cpu", "device")}


@dataclass(frozen=True)
class TextConfig(ModalityConfig):
    max_chars: int = 20_000  # longer captions are a status row (the encoder truncates tokens anyway)
    class_prompt: str = "{}"  # template for class names embedded for zero-shot eval


@dataclass(frozen=True)
class VideoConfig(ModalityConfig):
    frames: int = 8  # frames sampled uniformly per clip (EBind: 8)
    max_seconds: float = 3600.0  # longer clips are a status row
    max_pixels: int = 8_300_000  # per frame (4K); larger is a status row


@dataclass(frozen=True)
class AudioConfig(ModalityConfig):
    seconds: float = 10.0  # clip length fed to the encoder (longer audio is centre-cropped)
    pad: bool = True  # zero-pad shorter audio to `seconds`; false = keep its length (ImageBind spreads its clips over the real duration)
    sample_rate: int = 0  # 0 = the encoder's own rate
    max_seconds: float = 3600.0  # longer recordings are a status row


@dataclass(frozen=True)
class PointsConfig(ModalityConfig):
    points: int = 8192  # points sub-sampled per cloud
    max_points: int = 10_000_000  # larger clouds are a status row
    views: int = 6  # depth views rendered by the render-through-image-encoder fallback


MODALITY_SECTIONS: dict[str, type[ModalityConfig]] = {
    "image": ImageConfig,
    "text": TextConfig,
    "video": VideoConfig,
    "audio": AudioConfig,
    "points": PointsConfig,
}


@dataclass(frozen=True)
class PrecomputeConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "bf16"  # autocast dtype on CUDA (CPU runs in fp32)
    num_workers: int = -1  # DataLoader workers per rank (per actor under ray); -1 = by a calibration on the CPU, min(8, CPUs - 1) on a GPU, 0 under ray
    prefetch_factor: int = 4  # batches prefetched per worker
    compile: bool = False  # torch.compile the encoder
    handler: str = "record"  # bad sample policy: record (status row, go on) | raise
    trust_code: bool = False  # allow an encoder named as a bare `module:function` (imports and runs that code)
    max_member_mb: float = 512.0  # a tar member larger than this (compressed or not) is a status row, never read
    engine: str = "local"  # local (this process / torch.distributed world) | ray (parts scheduled on a Ray cluster)
    ray_address: str = ""  # Ray cluster to join; "" = RAY_ADDRESS, else a local cluster
    cpus_per_worker: float = 1.0  # CPUs per Ray encoder actor
    gpus_per_worker: float = 0.0  # GPUs per Ray encoder actor (0 on a CPU cluster)
    workers: int = 0  # Ray encoder actors; 0 = as many as the cluster's resources allow
    max_retries: int = 3  # times a failed or lost part is retried under ray
    CHOICES: typing.ClassVar[dict[str, tuple[str, ...]]] = {
        "precision": ("bf16", "fp16", "fp32"),
        "handler": ("record", "raise"),
        "engine": ("local", "ray"),
    }


@dataclass(frozen=True)
class PairConfig:
    query: str = "text"  # the modality whose items get neighbours (EBind: captions)
    targets: tuple[str, ...] = ()  # target modalities; empty = every other stored modality
    k: int = 16  # neighbours kept per query and modality
    min_score: float = -1.0  # drop neighbours below this cosine score
    mutual: bool = False  # keep only mutual nearest neighbours
    max_uses: int = 0  # hub limit: queries that may take one target as first choice; 0 = no limit
    engine: str = "auto"  # auto | torch | faiss-flat | faiss-ivf
    memory_gb: float = 8.0  # memory budget for the index / target blocks
    query_chunk: int = 65536  # queries per resumable chunk
    head_run: str = ""  # run whose exported heads map stores into the query's space; "" = none
    nprobe: int = 32  # IVF lists probed per query
    device: str = "auto"  # torch engine device: auto (cuda when available) | cpu | cuda | cuda:N
    save_index: bool = True  # write pairs/index/<m>.faiss + <m>.keys.parquet per target modality
    accept_quantile: float = 0.95  # accept a partner only above this quantile of true non-pair top scores (calibrated on own captions); 0 = accept all
    CHOICES: typing.ClassVar[dict[str, tuple[str, ...]]] = {
        "engine": ("auto", "torch", "faiss-flat", "faiss-ivf"),
    }


@dataclass(frozen=True)
class TrainConfig:
    run: str = "default"  # folder under <output>/runs/
    anchor: str = "text"  # the space every head maps into
    anchor_passthrough: tuple[str, ...] = ()  # modalities already in the anchor's space (no head)
    modalities: tuple[str, ...] = ()  # projected modalities; empty = every stored non-anchor one
    hidden: int = 2048  # width of the head's hidden layer (EBind: 2048)
    depth: int = 2  # Linear layers per head (EBind: 2)
    dropout: float = 0.0  # dropout after each hidden activation
    out_dim: int = 0  # 0 = the anchor's dim
    loss: str = "infonce"  # loss registry name
    epochs: int = 10  # passes over the training split
    batch_size: int = 1024  # samples per step (per rank)
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay
    warmup_steps: int = 50  # linear warm-up before cosine decay
    seed: int = 0  # seeds the split, the init and the shuffling
    val_fraction: float = 0.1  # held-out share of keys
    precision: str = "no"  # accelerate mixed precision: no | bf16 | fp16
    use_quintuples: bool = True  # train on pairs/quintuples.parquet when present
    use_captions: bool = True  # train on items whose own caption is in the anchor store
    triples: str = ""  # human-rated triples: a Parquet table (query_key, modality, target_key, label) or E-MM1's triplets.csv; "" = none
    partial: str = "drop"  # how `partial` triples count: drop | soft
    partial_weight: float = 0.5  # soft target weight of a partial match
    hard_negatives: int = 0  # in-batch hard negatives mined per row; 0 = off
    queue_size: int = 0  # cross-batch memory queue of negatives; 0 = off
    cyclip_in_modal: float = 0.0  # CyCLIP in-modal consistency weight
    cyclip_cross_modal: float = 0.0  # CyCLIP cross-modal consistency weight
    regression_weight: float = 0.0  # weight of ridge's objective ||head(x) - anchor||^2 (unnormalised output) added to the loss; 0 = plain InfoNCE
    gather: bool = True  # gather features across ranks for the loss
    local_loss: bool = False  # open_clip's local loss: local rows against gathered columns
    in_memory: str = "auto"  # auto | gpu | stream: where the cached dataset lives
    memory_gb: float = 0.0  # memory the cached vectors may take (whole, or stream cache); 0 = 60 % of free GPU memory on CUDA, 50 % of available RAM on CPU
    checkpoint_every: int = 0  # save_state every N steps; 0 = at an epoch's end if the last save is > 2 min old
    bridge: str = ""  # a `bindery bridge` output under <output>/bridge/ whose pseudo partners to train on; "" = none
    export_ebind: bool = False  # also write runs/<run>/ebind-heads.safetensors in EBind's layout (projectors.<m>.net.<i>.*)
    early_stop_fraction: float = 0.1  # share of training-side keys held back to pick the best epoch; 0 = train every epoch, keep the last
    patience: int = 10  # epochs without a better validation score before training stops
    start_margin_se: float = 1.0  # the epoch early stopping chose replaces a fitted start (train.init = "ridge", a warm start) only when its paired slice gain exceeds this many standard errors; 0 = any gain
    init: str = "random"  # random | ridge: start each head from the closed-form ridge map (λ by CV on the fitted rows), a candidate epoch 0
    warm_start: str = ""  # a finished run whose heads this run starts from instead of train.init (kept unless the validation slice improves); "" = none
    refit: bool = False  # after early stopping: train again on every training row (the slice too) for the epochs it kept, and export that
    CHOICES: typing.ClassVar[dict[str, tuple[str, ...]]] = {
        "init": ("random", "ridge"),
        "precision": ("no", "bf16", "fp16"),
        "partial": ("drop", "soft"),
        "in_memory": ("auto", "gpu", "stream"),
    }


@dataclass(frozen=True)
class EvalConfig:
    run: str = ""  # run to evaluate; "" = train.run
    ks: tuple[int, ...] = (1, 5, 10)  # Recall@K cut-offs
    split: str = "val"  # val | all
    label_key: str = "label"  # field of the samples' json metadata that holds the class
    eshot: tuple[str, ...] = ("audio:points", "points:audio")  # EShot pairs, query:class-source
    ridge_lambda: float = 0.0  # L2 penalty of the closed-form ridge baseline; 0 = chosen by 5-fold CV on training rows
    near_duplicate: float = 0.98  # cosine (in the encoder's own space) at which a held-out item counts as a near-duplicate of a training item
    drop_duplicates: bool = False  # leave held-out items that duplicate a training item (exact or near) out of the scores
    CHOICES: typing.ClassVar[dict[str, tuple[str, ...]]] = {"split": ("val", "all")}


@dataclass(frozen=True)
class BridgeConfig:
    """BrokenBind (METHODS.md section 4): pseudo partners for two modalities that never co-occur."""

    name: str = "default"  # folder under <output>/bridge/
    pivot: str = "text"  # the modality both sets share
    modalities: tuple[str, ...] = ()  # the two modalities to bind, e.g. ["image", "audio"]
    route: str = "both"  # cross-modal (feature-space map) | cross-dataset (sample-space combination) | both
    ridge_lambda: float = 0.0  # ridge penalty of both transitions; 0 = chosen by k-fold CV on training items
    neighbors: int = 64  # other-set items the sample-space route combines per item; 0 = all (kernel form)
    memory_gb: float = 4.0  # memory budget of the sample-space route's blocks
    folds: int = 5  # k of the k-fold cross-validation that picks ridge_lambda when it is 0
    val_fraction: float = 0.1  # share of each set held out of the fit to report its R^2 in config.json
    seed: int = 0  # seeds the CV folds and the validation slice
    cyclip_in_modal: float = 0.25  # train.bridge: CyCLIP in-modal weight between the two heads (CyCLIP: 0.25)
    cyclip_cross_modal: float = 0.25  # train.bridge: CyCLIP cross-modal weight between the two heads (CyCLIP: 0.25)
    emergent: bool = True  # train.bridge also trains the emergent route (pivot terms only, same rows) into runs/<run>-emergent/, eval's reference
    CHOICES: typing.ClassVar[dict[str, tuple[str, ...]]] = {"route": ("cross-modal", "cross-dataset", "both")}


@dataclass(frozen=True)
class CondenseConfig:
    """ImageBindDC (METHODS.md section 5): a few synthetic pairs per class, by CF distribution matching."""

    name: str = "default"  # condensed sets go to <output>/condensed/<name>-<per_class>/, the report to <output>/condensed/<name>/
    modalities: tuple[str, ...] = ("image", "text")  # two or more modalities that co-occur (same sample keys)
    label_key: str = "label"  # field of the samples' json metadata that holds the class
    per_class: tuple[int, ...] = (1, 10, 20)  # synthetic pairs per class; one set for each value
    steps: int = 300  # optimisation steps per set (one Adam step on every class per step)
    lr: float = 0.01  # Adam learning rate of the synthetic vectors' parameters theta (items are unit(theta))
    frequencies: int = 4096  # CFD frequencies drawn per step and modality (NCFM: 4096)
    sigma: float = 1.0  # standard deviation of the CFD frequencies (NCFM: 1, on L2-normalised features)
    alpha: float = 0.5  # CFD amplitude weight (NCFM: 0.5)
    beta: float = 0.5  # CFD phase weight (NCFM: 0.5)
    cross_weight: float = 1.0  # weight of the cross-modal term (element-wise products; needs equal dims)
    joint_weight: float = 1.0  # weight of the joint term (cross-product matrix)
    batch_size: int = 256  # real pairs per class per step (all of a smaller class)
    init: str = "real"  # real (random real pairs of the class) | noise (random directions)
    space: str = "store"  # store (the raw stores) | the name of a run whose exported heads give the space
    min_items: int = 2  # classes with fewer training pairs are left out of the sets and the report
    memory_gb: float = 2.0  # budget of one forward pass's frequency projections; classes go in chunks that fit
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    evaluate: bool = False  # also write condensed/<name>/report.json (train on condensed, test on real)
    seeds: int = 5  # report: random real subsets drawn per size (mean and spread)
    probe_c: float = 10.0  # report: inverse L2 strength (scikit-learn's C) of the logistic-regression probe, one for every set
    seed: int = 0  # seeds the init, the frequencies, the batches and the report's baselines
    CHOICES: typing.ClassVar[dict[str, tuple[str, ...]]] = {"init": ("real", "noise")}


@dataclass(frozen=True)
class AnalyzeConfig:
    """Fused-embedding analysis (Hamara & Rivas; METHODS.md section 6)."""

    name: str = "default"  # folder under <output>/analysis/
    run: str = ""  # run whose exported heads give the bound space; "" = the stores as they are (one space)
    fuse: tuple[str, ...] = ("image:0.5", "text:0.5")  # modality:weight terms; fused = weighted mean of the modalities' per-listing means
    group_key: str = ""  # metadata field grouping samples into listings; "" = each sample alone
    missing: str = "drop"  # a listing without one of the fused modalities: drop | reweight (fuse what it has)
    normalize: bool = False  # L2-normalise the fused vectors (the paper averages raw)
    dims: tuple[int, ...] = (8, 16, 32, 64, 128)  # PCA dimensions tried
    ks: tuple[int, ...] = (4, 8, 16, 32)  # k-means cluster counts tried; with k_step, [first, last] of a range
    k_step: int = 0  # > 0: ks = [first, last] means first, first + k_step, ... up to last
    restarts: int = 4  # k-means restarts per (dim, k); the lowest inertia is kept
    label_key: str = "label"  # metadata field with external labels (NMI, ARI, purity); "" = none
    query: tuple[str, ...] = ()  # modalities whose items retrieve listings, e.g. ["audio"]
    neighbors: int = 5  # listings shown per centroid and retrieved per query
    map: str = "auto"  # 2-D map: umap | pca | auto (umap when umap-learn is installed, else PCA-2)
    captions: bool = True  # read the shown listings' captions from the shards' txt members (one pass)
    large: int = 100_000  # past this many listings: faiss k-means, randomized PCA, sampled silhouette
    silhouette_sample: int = 10_000  # items the sampled silhouette uses past `large`
    seed: int = 0  # seeds PCA, k-means and the samples
    CHOICES: typing.ClassVar[dict[str, tuple[str, ...]]] = {"missing": ("drop", "reweight"),
                                                            "map": ("auto", "umap", "pca")}


@dataclass(frozen=True)
class PublishConfig:
    folder: str = ""  # bundle folder; "" = <output>/publish
    part_mb: float = 256.0  # target size (MiB) of a re-partitioned Parquet file
    run: str = ""  # run whose heads go into the bundle; "" = none
    repo_id: str = ""  # Hugging Face dataset repo to upload to; "" = no upload
    private: bool = True  # create the repo private
    verify: bool = True  # re-check the finished bundle (reads every file again) before it is moved into place
    emm1: bool = False  # also write the pairs in E-MM1's layout: emm1/nn_<k>/data_groups.csv + emm1/infos/<m>.csv
    allow_random_weights: bool = False  # publish stores made with weights = "random" (refused by default)


@dataclass(frozen=True)
class Manifest:
    dataset: DatasetConfig
    modalities: dict[str, ModalityConfig] = field(default_factory=dict)
    precompute: PrecomputeConfig = field(default_factory=PrecomputeConfig)
    pair: PairConfig = field(default_factory=PairConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    condense: CondenseConfig = field(default_factory=CondenseConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    path: str = ""  # where it was read from ("" for an embedded or built manifest)

    @property
    def output(self) -> Path:
        return Path(self.dataset.output)

    @property
    def layout(self) -> OutputLayout:
        """Every path under ``dataset.output``."""
        return OutputLayout(self.dataset.output)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (TOML-able) of every key, defaults included: what made a run."""
        out = dataclasses.asdict(self)
        out.pop("path")
        return out


SECTIONS: dict[str, type] = {
    "dataset": DatasetConfig,
    "precompute": PrecomputeConfig,
    "pair": PairConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "publish": PublishConfig,
    "bridge": BridgeConfig,
    "condense": CondenseConfig,
    "analyze": AnalyzeConfig,
}


# ----------------------------------------------------------------------------- checking


def _allowed(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _coerce_bool(key: str, value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ManifestError(f"{key}: expected true or false, got {value!r}")
    return value


def _coerce_number(key: str, value: Any, hint: type) -> int | float:
    # an int is a valid float, never the reverse; booleans are neither
    accepted, what = (int, "an integer") if hint is int else (int | float, "a number")
    if isinstance(value, str):
        try:
            value = hint(value)
        except ValueError:
            raise ManifestError(f"{key}: expected {what}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise ManifestError(f"{key}: expected {what}, got {value!r}")
    if not math.isfinite(value):
        raise ManifestError(f"{key}: expected a finite number, got {value!r}; NaN and inf are never valid")
    return hint(value)


def _coerce_str(key: str, value: Any, choices: tuple[str, ...] | None) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"{key}: expected a string, got {value!r}")
    if choices and value not in choices:
        raise ManifestError(f"{key}: {value!r} is not allowed; use one of {', '.join(choices)}")
    return value


def _coerce(key: str, value: Any, hint: Any, choices: tuple[str, ...] | None) -> Any:
    """Check ``value`` against a field's type hint; return it in the field's type."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        (inner, *_rest) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, list | tuple):
            raise ManifestError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, inner, choices) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise ManifestError(f"{key}: internal error, unions are not supported")  # pragma: no cover
    if hint is bool:
        return _coerce_bool(key, value)
    if hint in (int, float):
        return _coerce_number(key, value, hint)
    if hint is str:
        return _coerce_str(key, value, choices)
    raise ManifestError(f"{key}: unsupported type {hint}")  # pragma: no cover


def _build(cls: type, table: Any, prefix: str) -> Any:
    if not isinstance(table, dict):
        raise ManifestError(f"{prefix}: expected a table [{prefix}], got {table!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in names:
            raise ManifestError(
                f"{prefix}.{key}: unknown key; allowed keys in [{prefix}] are: {_allowed(cls)}"
            )
    choices_by_key = getattr(cls, "CHOICES", {})
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in table:
            kwargs[f.name] = _coerce(f"{prefix}.{f.name}", table[f.name], hints[f.name],
                                     choices_by_key.get(f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ManifestError(f"{prefix}.{f.name}: required key is missing; add it to [{prefix}]")
    return cls(**kwargs)


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ManifestError(f"{key}: must be > 0, got {value!r}")


def _non_negative(key: str, value: float, zero: str = "off") -> None:
    if value < 0:
        raise ManifestError(f"{key}: must be >= 0 (0 = {zero}), got {value!r}")


def _device(key: str, value: str) -> None:
    if not (value in ("auto", "cpu", "cuda") or value.startswith("cuda:")):
        raise ManifestError(f"{key}: {value!r} is not allowed; use auto, cpu, cuda or cuda:N")


def _colour(key: str, value: str) -> None:
    from PIL import ImageColor

    try:
        ImageColor.getrgb(value)
    except ValueError:
        raise ManifestError(f"{key}: {value!r} is not a colour; use a name like \"white\" or \"#rrggbb\"") from None


def _modality(key: str, value: str) -> None:
    if value not in MODALITIES:
        raise ManifestError(f"{key}: {value!r} is not a modality; use one of {', '.join(MODALITIES)}")


def _check_dataset(m: Manifest) -> None:
    if not m.dataset.name.strip():
        raise ManifestError("dataset.name: must not be empty")
    if not m.dataset.shards.strip():
        raise ManifestError("dataset.shards: must not be empty; give a brace pattern like data/shard-{000..009}.tar")
    for part in m.dataset.shards.split("::"):
        if part.strip().startswith(("http://", "https://", "s3://", "gs://")):
            raise ManifestError(f"dataset.shards: {part.strip()!r}: URLs are not read directly; stream them with a "
                                "pipe: command, e.g. 'pipe:curl -s URL' or 'pipe:aws s3 cp URL -'")


def _check_modalities(m: Manifest) -> None:
    if not m.modalities:
        raise ManifestError(f"modalities: declare at least one of [modalities.<{'|'.join(MODALITIES)}>]")
    for name, mod in m.modalities.items():
        _positive(f"modalities.{name}.batch_size", mod.batch_size)
        if not mod.encoder.strip():
            raise ManifestError(f"modalities.{name}.encoder: must not be empty")
        for fname in ("frames", "points", "views", "seconds", "max_pixels", "max_points", "max_seconds", "max_chars"):
            if hasattr(mod, fname):
                _positive(f"modalities.{name}.{fname}", getattr(mod, fname))
        _positive(f"modalities.{name}.scale", mod.scale)
        if isinstance(mod, ImageConfig):
            _colour(f"modalities.{name}.background", mod.background)
        if isinstance(mod, AudioConfig) and mod.sample_rate < 0:
            raise ManifestError(f"modalities.{name}.sample_rate: must be >= 0 (0 = the encoder's rate)")


def _check_precompute(m: Manifest) -> None:
    pc = m.precompute
    _device("precompute.device", pc.device)
    for key in ("prefetch_factor", "max_member_mb", "cpus_per_worker"):
        _positive(f"precompute.{key}", getattr(pc, key))
    for key in ("gpus_per_worker", "workers", "max_retries"):
        _non_negative(f"precompute.{key}", getattr(pc, key), "none" if key != "workers" else "automatic")


def _check_pair(m: Manifest) -> None:
    p = m.pair
    _modality("pair.query", p.query)
    for mod in p.targets:
        _modality("pair.targets", mod)
    for key in ("k", "memory_gb", "query_chunk", "nprobe"):
        _positive(f"pair.{key}", getattr(p, key))
    _non_negative("pair.max_uses", p.max_uses, "no limit")
    if not 0.0 <= p.accept_quantile < 1.0:
        raise ManifestError(f"pair.accept_quantile: must be in [0, 1) (0 = accept every partner), got {p.accept_quantile}")
    _device("pair.device", p.device)


def _check_train(m: Manifest) -> None:
    t = m.train
    _modality("train.anchor", t.anchor)
    for key in ("modalities", "anchor_passthrough"):
        for mod in getattr(t, key):
            _modality(f"train.{key}", mod)
    for key in ("hidden", "depth", "epochs", "batch_size", "lr"):
        _positive(f"train.{key}", getattr(t, key))
    if not 0.0 <= t.dropout < 1.0:
        raise ManifestError(f"train.dropout: must be in [0, 1), got {t.dropout}")
    if not 0.0 < t.val_fraction < 1.0:
        raise ManifestError(f"train.val_fraction: must be in (0, 1), got {t.val_fraction}")
    for key in ("hard_negatives", "queue_size", "checkpoint_every", "warmup_steps", "cyclip_in_modal",
                "cyclip_cross_modal", "regression_weight"):
        _non_negative(f"train.{key}", getattr(t, key))
    _non_negative("train.memory_gb", t.memory_gb, zero="derive it from free memory")
    if not 0.0 <= t.early_stop_fraction < 1.0:
        raise ManifestError(f"train.early_stop_fraction: must be in [0, 1) (0 = no early stopping), "
                            f"got {t.early_stop_fraction}")
    _positive("train.patience", t.patience)
    _non_negative("train.start_margin_se", t.start_margin_se)
    if not 0.0 < t.partial_weight <= 1.0:
        raise ManifestError(f"train.partial_weight: must be in (0, 1], got {t.partial_weight}")


def _check_eval(m: Manifest) -> None:
    for k in m.eval.ks:
        _positive("eval.ks", k)
    _non_negative("eval.ridge_lambda", m.eval.ridge_lambda, "chosen by cross-validation")
    if not -1.0 <= m.eval.near_duplicate <= 1.0:
        raise ManifestError(f"eval.near_duplicate: a cosine in [-1, 1], got {m.eval.near_duplicate}")
    for pair in m.eval.eshot:
        a, sep, b = pair.partition(":")
        if not sep or a not in MODALITIES or b not in MODALITIES:
            raise ManifestError(f"eval.eshot: {pair!r} must be 'query:classes', two modalities like 'audio:points'")


def _check_publish(m: Manifest) -> None:
    _positive("publish.part_mb", m.publish.part_mb)


def _check_bridge(m: Manifest) -> None:
    b = m.bridge
    _modality("bridge.pivot", b.pivot)
    for mod in b.modalities:
        _modality("bridge.modalities", mod)
    _non_negative("bridge.ridge_lambda", b.ridge_lambda, "chosen by cross-validation")
    _non_negative("bridge.neighbors", b.neighbors, "all")
    _positive("bridge.memory_gb", b.memory_gb)
    if b.folds < 2:
        raise ManifestError(f"bridge.folds: k-fold cross-validation needs at least 2 folds, got {b.folds}")
    if not 0.0 < b.val_fraction < 1.0:
        raise ManifestError(f"bridge.val_fraction: must be in (0, 1), got {b.val_fraction}")
    for key in ("cyclip_in_modal", "cyclip_cross_modal"):
        _non_negative(f"bridge.{key}", getattr(b, key))
    if b.modalities and (len(b.modalities) != 2 or len(set(b.modalities)) != 2 or b.pivot in b.modalities):
        raise ManifestError(f"bridge.modalities: {list(b.modalities)!r} must name two different modalities, "
                            f"neither of them the pivot {b.pivot!r}; e.g. modalities = [\"image\", \"audio\"]")


def _check_condense(m: Manifest) -> None:
    c = m.condense
    for mod in c.modalities:
        _modality("condense.modalities", mod)
    if len(set(c.modalities)) < 2 or len(set(c.modalities)) != len(c.modalities):
        raise ManifestError(f"condense.modalities: {list(c.modalities)} must name two or more different "
                            "modalities that co-occur, like [\"image\", \"text\"]")
    if not c.per_class or len(set(c.per_class)) != len(c.per_class):
        raise ManifestError(f"condense.per_class: {list(c.per_class)} must be distinct sizes, like [1, 10, 20]")
    for n in c.per_class:
        _positive("condense.per_class", n)
    for key in ("steps", "lr", "frequencies", "sigma", "batch_size", "min_items", "memory_gb", "seeds", "probe_c"):
        _positive(f"condense.{key}", getattr(c, key))
    for key in ("alpha", "beta", "cross_weight", "joint_weight"):
        _non_negative(f"condense.{key}", getattr(c, key))
    if c.alpha + c.beta <= 0:
        raise ManifestError("condense.alpha / condense.beta: at least one must be > 0 (NCFM: 0.5 and 0.5)")
    if not c.name.strip() or "/" in c.name:
        raise ManifestError(f"condense.name: {c.name!r} must be a plain folder name")
    if not c.space.strip():
        raise ManifestError("condense.space: must be \"store\" or the name of a trained run")
    _device("condense.device", c.device)


def _check_fuse(terms: tuple[str, ...]) -> None:
    if not terms:
        raise ManifestError('analyze.fuse: must name at least one modality, like ["image:0.5", "text:0.5"]')
    fused = []
    for term in terms:
        mod, sep, weight = term.partition(":")
        try:
            ok = sep and mod in MODALITIES and math.isfinite(float(weight)) and float(weight) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ManifestError(f"analyze.fuse: {term!r} must be 'modality:weight' with a weight > 0, "
                                "like \"image:0.5\"")
        if mod in fused:
            raise ManifestError(f"analyze.fuse: {mod!r} is named twice; give each modality one weight")
        fused.append(mod)


def _check_analyze(m: Manifest) -> None:
    a = m.analyze
    _check_fuse(a.fuse)
    for mod in a.query:
        _modality("analyze.query", mod)
    for v in a.dims:
        _positive("analyze.dims", v)
    if not a.dims or not a.ks:
        raise ManifestError(f"analyze.{'dims' if not a.dims else 'ks'}: must not be empty")
    for v in a.ks:
        if v < 2:
            raise ManifestError(f"analyze.ks: {v} clusters cannot be scored; every k must be >= 2")
    _non_negative("analyze.k_step", a.k_step, "ks is a list")
    if a.k_step and (len(a.ks) != 2 or a.ks[0] > a.ks[1]):
        raise ManifestError(f"analyze.ks: with analyze.k_step = {a.k_step} give [first, last] with first <= last "
                            f"(a range), got {list(a.ks)}")
    for key in ("neighbors", "large", "silhouette_sample", "restarts"):
        _positive(f"analyze.{key}", getattr(a, key))


# One check per section, in manifest order: cross-field and range checks that types alone do not catch.
CHECKS = (_check_dataset, _check_modalities, _check_precompute, _check_pair, _check_train, _check_eval,
          _check_publish, _check_bridge, _check_condense, _check_analyze)


def _check_values(m: Manifest) -> None:
    for check in CHECKS:
        check(m)


# ----------------------------------------------------------------------------- loading


def _resolve_path(value: str, base: Path) -> str:
    if not value or value.startswith(("pipe:", "http://", "https://", "s3://", "gs://")):
        return value
    p = Path(value).expanduser()
    return os.path.normpath(p if p.is_absolute() else (base / p))


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a raw TOML dict. Values are parsed as TOML when they
    parse (numbers, booleans, lists), else kept as strings; types are checked later."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ManifestError(f"--set {item!r}: expected KEY=VALUE, like --set pair.k=32")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        parts = key.split(".")
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ManifestError(f"--set {key}: {part!r} is not a table")
        node[parts[-1]] = value
    return raw


def from_dict(raw: dict[str, Any], base: Path | None = None, path: str = "") -> Manifest:
    """Build and check a manifest from a raw dict (as parsed from TOML)."""
    raw = dict(raw)
    base = base or Path.cwd()
    unknown = set(raw) - set(SECTIONS) - {"modalities"}
    if unknown:
        key = sorted(unknown)[0]
        raise ManifestError(f"{key}: unknown section; allowed sections are: {', '.join([*SECTIONS, 'modalities'])}")
    if "dataset" not in raw:
        raise ManifestError("dataset: required section is missing; add [dataset] with name, shards and output")
    sections = {name: _build(cls, raw[name], name) for name, cls in SECTIONS.items() if name in raw}
    mods_raw = raw.get("modalities", {})
    if not isinstance(mods_raw, dict):
        raise ManifestError("modalities: expected tables like [modalities.image]")
    modalities = {}
    for name, table in mods_raw.items():
        if name not in MODALITY_SECTIONS:
            raise ManifestError(f"modalities.{name}: unknown modality; use one of {', '.join(MODALITIES)}")
        mod = _build(MODALITY_SECTIONS[name], table, f"modalities.{name}")
        if mod.weights not in ("", "random"):  # a local file or folder, relative to the manifest
            mod = dataclasses.replace(mod, weights=_resolve_path(mod.weights, base))
        modalities[name] = mod
    ds = sections["dataset"]
    ds = dataclasses.replace(ds, shards=_resolve_path(ds.shards, base), output=_resolve_path(ds.output, base))
    sections["dataset"] = ds
    if "train" in sections and sections["train"].triples:
        sections["train"] = dataclasses.replace(
            sections["train"], triples=_resolve_path(sections["train"].triples, base))
    if "publish" in sections and sections["publish"].folder:
        sections["publish"] = dataclasses.replace(
            sections["publish"], folder=_resolve_path(sections["publish"].folder, base))
    manifest = Manifest(modalities=modalities, path=path, **sections)
    _check_values(manifest)
    return manifest


def load(path: str | Path, overrides: list[str] | None = None) -> Manifest:
    """Read, override and check a manifest file. Relative paths in it are relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found; pass the path of a TOML file (see manifests/demo.toml)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: not valid TOML: {exc}") from None
    raw = apply_overrides(raw, overrides or [])
    return from_dict(raw, base=path.resolve().parent, path=str(path))
