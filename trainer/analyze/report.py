"""The analysis's files: ``report.json`` (everything measured), ``clusters.parquet`` (key, then the
cluster at every (dim, k)) and ``report.md`` (rendered from the report's own JSON, so both agree)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.core.layout import AnalysisLayout
from pipeline.core.store import atomic_write_table, atomic_write_text
from trainer.analyze.choose import Choice
from trainer.analyze.cluster import Clustering, Setting
from trainer.analyze.describe import ClusterInfo
from trainer.analyze.query import QueryResult

DIGITS = 6  # significant digits of every float in report.json


@dataclass
class SpaceSummary:
    """What was analysed and how it was built."""

    run: str  # "" = the stores as they are
    modalities: dict[str, str]  # modality -> how its vectors reached the space
    items: dict[str, int]  # modality -> items loaded
    weights: dict[str, float]  # the fused modalities' weights
    normalize: bool
    group_key: str
    missing: str
    listings: int
    lacking: dict[str, int]  # modality -> listings that had none of it
    labelled: int  # listings with a label
    label_key: str
    large: bool  # the large path (FAISS k-means, randomized PCA, sampled silhouette)
    pca_solver: str
    silhouette_sample: int | None  # listings the silhouette used; None = all
    map_method: str
    seed: int


@dataclass
class QueryExample:
    """A shown query: its caption and the captions of the listings it retrieved."""

    modality: str
    query: str
    label: str
    caption: str
    listings: list[tuple[str, str, str, float]]  # (key, label, caption, score)


@dataclass
class Analysis:
    name: str
    space: SpaceSummary
    explained: dict[int, float]
    clusterings: dict[Setting, Clustering]
    choice: Choice
    clusters: list[ClusterInfo]
    queries: list[QueryResult]
    examples: list[QueryExample] = field(default_factory=list)
    plots: dict[str, str] = field(default_factory=dict)  # plot name -> file name beside the report


def rounded(value: Any) -> Any:
    """Floats to DIGITS significant digits, NaN/inf to None (JSON has neither), recursively."""
    if isinstance(value, float | np.floating):
        return float(f"{value:.{DIGITS}g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


def _setting(s: Setting | None) -> dict[str, int] | None:
    return None if s is None else {"dim": s.dim, "k": s.k}


def report_dict(a: Analysis) -> dict[str, Any]:
    scores = [{"dim": s.dim, "k": s.k, **asdict(c.scores), "votes": a.choice.votes.get(s, 0)}
              for s, c in sorted(a.clusterings.items())]
    choice = {**_setting(a.choice.setting), "rule": a.choice.rule,
              "scores": asdict(a.clusterings[a.choice.setting].scores),
              "best_by_score": {n: _setting(s) for n, s in a.choice.best_by_score.items()},
              "best_by_nmi": _setting(a.choice.best_by_nmi)}
    return rounded({
        "name": a.name, "space": asdict(a.space),
        "explained_variance": {str(d): v for d, v in a.explained.items()},
        "scores": scores, "choice": choice,
        "clusters": [asdict(c) for c in a.clusters],
        "queries": {q.modality: asdict(q) for q in a.queries},
        "query_examples": [asdict(e) for e in a.examples],
        "plots": a.plots,
    })


def clusters_table(keys: np.ndarray, clusterings: dict[Setting, Clustering]) -> pa.Table:
    cols = {"key": pa.array([str(k) for k in keys], pa.string())}
    for s, c in sorted(clusterings.items()):
        cols[s.name] = pa.array(c.assignments.astype(np.int32), pa.int32())
    return pa.table(cols)


def write(layout: AnalysisLayout, analysis: Analysis, keys: np.ndarray) -> dict[str, Any]:
    """Write report.json, clusters.parquet and report.md; return the report's dict."""
    from trainer.analyze.markdown import render

    report = report_dict(analysis)
    atomic_write_table(clusters_table(keys, analysis.clusterings), layout.clusters)
    atomic_write_text(layout.report_json, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(layout.report_md, render(report))
    return report
