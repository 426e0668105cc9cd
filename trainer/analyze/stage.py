"""`bindery analyze`: the fused-embedding analysis (Hamara & Rivas; METHODS.md section 6) of a bound
space -> ``<output>/analysis/<name>/`` (report.json, clusters.parquet, PNG plots, report.md).

fuse (:mod:`.space`) -> PCA per dim (:mod:`.reduce`) -> k-means and scores per (dim, k)
(:mod:`.cluster`) -> the choice (:mod:`.choose`) -> centroid neighbours (:mod:`.describe`) ->
cross-modal retrieval (:mod:`.query`) -> plots and the report.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.core.layout import AnalysisLayout
from pipeline.core.manifest import Manifest, ManifestError
from trainer.analyze import plots
from trainer.analyze.captions import read_captions
from trainer.analyze.choose import choose
from trainer.analyze.cluster import Clustering, checked_ks, cluster_all, k_values
from trainer.analyze.describe import describe, nearest_to_centroids
from trainer.analyze.embed2d import map_2d, map_method
from trainer.analyze.query import QueryResult, retrieve
from trainer.analyze.reduce import Reduction, reduce
from trainer.analyze.report import Analysis, QueryExample, SpaceSummary, write
from trainer.analyze.space import Grouping, Listings, fuse, fuse_weights, load_space, read_grouping

log = logging.getLogger(__name__)
SHOWN_QUERIES = 5  # query examples (with captions) per modality in report.md: scored ones first


def _shown(q: QueryResult) -> list:
    """The hits report.md shows: queries with a scored label first, then the others, in store order."""
    return sorted(q.hits, key=lambda h: h.precision is None)[:SHOWN_QUERIES]


def _examples(queries: list[QueryResult], listings: Listings, captions: dict[str, str]) -> list[QueryExample]:
    caption_of = dict(zip(listings.keys, listings.caption_keys, strict=True))
    label_of = dict(zip(listings.keys, listings.labels, strict=True))
    out = []
    for q in queries:
        for hit in _shown(q):
            shown = [(k, str(label_of[k]), captions.get(caption_of[k], ""), s)
                     for k, s in zip(hit.listings, hit.scores, strict=True)]
            out.append(QueryExample(q.modality, hit.query, hit.label, captions.get(hit.query, ""), shown))
    return out


def _caption_keys(nearest: dict[int, list[tuple[int, float]]], queries: list[QueryResult],
                  listings: Listings) -> set[str]:
    position = {k: i for i, k in enumerate(listings.keys)}
    keys = {str(listings.caption_keys[i]) for pairs in nearest.values() for i, _ in pairs}
    for q in queries:
        for hit in _shown(q):
            keys.add(hit.query)
            keys.update(str(listings.caption_keys[position[k]]) for k in hit.listings)
    return keys


def _plots(out: AnalysisLayout, clusterings: dict, choice, reduction: Reduction, listings: Listings,
           infos, method: str, seed: int) -> tuple[dict[str, str], str]:
    chosen: Clustering = clusterings[choice.setting]
    labelled = bool((listings.labels != "").any())
    names = {"scores": out.plot("scores"), "map": out.plot("map"), "sizes": out.plot("sizes")}
    plots.score_lines(names["scores"], clusterings, choice, plots.INTERNAL_TITLES)
    if labelled:
        names["labels"] = out.plot("labels")
        plots.score_lines(names["labels"], clusterings, choice, plots.EXTERNAL_TITLES)
    mapped = map_2d(reduction.at(choice.setting.dim), reduction.projected, method, seed)
    plots.cluster_map(names["map"], mapped, chosen.assignments, listings.labels if labelled else None,
                      choice.setting)
    plots.cluster_sizes(names["sizes"], infos, choice.setting)
    return {k: p.name for k, p in names.items()}, mapped.method


def _summary(manifest: Manifest, items, listings: Listings, large: bool, reduction: Reduction,
             mapped_by: str) -> SpaceSummary:
    cfg = manifest.analyze
    return SpaceSummary(cfg.run, {m: it.how for m, it in items.items()}, {m: len(it.keys) for m, it in items.items()},
                        fuse_weights(cfg), cfg.normalize, cfg.group_key, cfg.missing, len(listings.keys),
                        listings.lacking, int((listings.labels != "").sum()), cfg.label_key, large, reduction.solver,
                        cfg.silhouette_sample if large and cfg.silhouette_sample < len(listings.keys) else None,
                        mapped_by, cfg.seed)


def _listings(manifest: Manifest) -> tuple[dict, Grouping, Listings]:
    cfg = manifest.analyze
    items = load_space(manifest)
    grouping = read_grouping(manifest)
    listings = fuse(items, fuse_weights(cfg), grouping, cfg.missing, cfg.normalize)
    if len(listings.keys) < 3:
        raise ManifestError(f"analyze.fuse: only {len(listings.keys)} listings have "
                            f"{' and '.join(fuse_weights(cfg))}; clustering needs at least 3 (or set "
                            "analyze.missing = \"reweight\" to fuse what each listing has)")
    return items, grouping, listings


def run(manifest: Manifest) -> dict[str, Any]:
    """Analyse ``[analyze]``'s space; write and return the report's headline."""
    cfg = manifest.analyze
    method = map_method(cfg.map)  # a missing umap-learn is named before any work
    items, grouping, listings = _listings(manifest)
    ks = checked_ks(k_values(cfg), len(listings.keys))
    large = len(listings.keys) > cfg.large
    log.info("%d listings (%s path)", len(listings.keys), "large" if large else "exact")
    reduction = reduce(listings.vectors, cfg.dims, cfg.seed, large)
    clusterings = cluster_all(reduction, ks, listings.labels, cfg, large)
    choice = choose(clusterings)
    chosen = clusterings[choice.setting]
    nearest = nearest_to_centroids(chosen, reduction.at(choice.setting.dim), cfg.neighbors)
    queries = [retrieve(items[m], listings, grouping, cfg.neighbors) for m in cfg.query]
    captions = read_captions(manifest, _caption_keys(nearest, queries, listings)) if cfg.captions else {}
    infos = describe(chosen, nearest, listings, captions)
    out = manifest.layout.analysis(cfg.name)
    plot_files, mapped_by = _plots(out, clusterings, choice, reduction, listings, infos, method, cfg.seed)
    summary = _summary(manifest, items, listings, large, reduction, mapped_by)
    analysis = Analysis(cfg.name, summary, reduction.explained, clusterings, choice, infos, queries,
                        _examples(queries, listings, captions), plot_files)
    report = write(out, analysis, listings.keys)
    log.info("analysis %r: chose dim %d, k %d; report in %s", cfg.name, choice.setting.dim, choice.setting.k,
             out.report_md)
    return {"analysis": cfg.name, "listings": len(listings.keys), "chosen": report["choice"],
            "queries": {m: {k: q[k] for k in ("precision_at_k", "chance", "scored")} for m, q in report["queries"].items()},
            "report": str(out.report_md)}

