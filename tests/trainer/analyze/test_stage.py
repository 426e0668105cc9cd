"""`bindery analyze` end to end on planted listings: the report's scores are scikit-learn's on the
same assignments, the planted labels are found, same seed -> same report, the files render."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    normalized_mutual_info_score,
    silhouette_score,
)

from pipeline.cli import STAGES
from pipeline.core.manifest import ManifestError
from tests.trainer.analyze.conftest import PNG_SIGNATURE, analyze_manifest, fused_by_hand, planted_listings
from trainer.analyze import embed2d
from trainer.analyze.stage import run


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    p = planted_listings(out, clusters=4, per_cluster=30, dim=24)
    m = analyze_manifest(out, query=["audio"], neighbors=3)
    summary = run(m)
    return p, m, summary, m.layout.analysis(m.analyze.name)


def test_scores_equal_scikit_learns_on_the_same_assignments(analysed):
    p, m, _, out = analysed
    report = json.loads(out.report_json.read_text())
    clusters = pq.read_table(out.clusters).to_pydict()
    assert clusters["key"] == p.listing_keys
    fused = fused_by_hand(p)
    for row in report["scores"]:
        z = PCA(n_components=row["dim"], svd_solver="full").fit_transform(fused)
        a = np.array(clusters[f"d{row['dim']}_k{row['k']}"])
        assert len(np.unique(a)) == row["k"]
        truth = [p.labels[k] for k in p.listing_keys]
        contingency = {}
        for lab, c in zip(truth, a, strict=True):
            contingency.setdefault(c, []).append(lab)
        purity = sum(max(labs.count(x) for x in set(labs)) for labs in contingency.values()) / len(a)
        want = {"silhouette": silhouette_score(z, a), "calinski_harabasz": calinski_harabasz_score(z, a),
                "davies_bouldin": davies_bouldin_score(z, a), "nmi": normalized_mutual_info_score(truth, a),
                "ari": adjusted_rand_score(truth, a), "purity": purity}
        for name, value in want.items():
            assert row[name] == pytest.approx(value, rel=1e-4, abs=1e-5), (row["dim"], row["k"], name)


def test_the_planted_clusters_are_found(analysed):
    _, _, summary, out = analysed
    report = json.loads(out.report_json.read_text())
    assert (summary["chosen"]["dim"], summary["chosen"]["k"]) == (report["choice"]["dim"], report["choice"]["k"])
    assert report["choice"]["k"] == 4
    assert report["choice"]["scores"]["nmi"] > 0.99 and report["choice"]["scores"]["ari"] > 0.99
    assert report["choice"]["best_by_nmi"]["k"] == 4
    sizes = sorted(c["size"] for c in report["clusters"])
    assert sizes == [30, 30, 30, 30]
    for c in report["clusters"]:  # neighbours: members, nearest first, with their listing's caption
        assert len(c["neighbours"]) == 3 and c["labels"][0][1] == 30
        assert [n["distance"] for n in c["neighbours"]] == sorted(n["distance"] for n in c["neighbours"])
        assert all(n["caption"] == f"a {n['label']} thing number {n['key']}" for n in c["neighbours"])
    assert 0 < report["explained_variance"]["2"] < report["explained_variance"]["8"] <= 1
    audio = report["queries"]["audio"]
    assert audio["queries"] == 120 and audio["scored"] == 120
    assert audio["precision_at_k"] == 1.0 and audio["chance"] == pytest.approx(29 / 119, rel=1e-5)


def test_report_md_renders_and_every_plot_is_a_png(analysed):
    _, _, _, out = analysed
    report = json.loads(out.report_json.read_text())
    md = out.report_md.read_text()
    assert f"**dim {report['choice']['dim']}, k {report['choice']['k']}**" in md
    assert "Rule: Each internal score votes" in md and "## Cross-modal retrieval" in md
    assert set(report["plots"]) == {"scores", "labels", "map", "sizes"}
    for name in report["plots"].values():
        assert f"]({name})" in md
        data = (out.root / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    assert report["space"]["map_method"] == "PCA-2"


def test_same_seed_same_report(analysed, tmp_path):
    p, m, _, out = analysed
    again = planted_listings(tmp_path, clusters=4, per_cluster=30, dim=24)
    assert again.listing_keys == p.listing_keys
    m2 = analyze_manifest(tmp_path, query=["audio"], neighbors=3)
    run(m2)
    first, second = (json.loads(o.report_json.read_text()) for o in (out, m2.layout.analysis("default")))
    assert first == second
    assert out.report_md.read_text() == m2.layout.analysis("default").report_md.read_text()


def test_the_map_method_and_a_missing_umap(tmp_path, monkeypatch):
    planted_listings(tmp_path, clusters=3, per_cluster=10, dim=8)
    monkeypatch.setattr(embed2d, "umap_installed", lambda: False)
    with pytest.raises(ManifestError, match=r"analyze.map: \"umap\" needs umap-learn.*bindery\[analyze\]"):
        run(analyze_manifest(tmp_path, map="umap"))
    summary = run(analyze_manifest(tmp_path, map="auto", ks=[2, 3], name="auto"))
    assert json.loads(open(summary["report"].replace(".md", ".json")).read())["space"]["map_method"] == "PCA-2"


def test_config_errors_name_the_key(tmp_path):
    planted_listings(tmp_path, clusters=2, per_cluster=5, dim=6)
    with pytest.raises(ManifestError, match=r"analyze.dims: 16 dimensions asked, but 10 listings of dim 6"):
        run(analyze_manifest(tmp_path, dims=[4, 16]))
    with pytest.raises(ManifestError, match="analyze.ks: k = 12 needs more than 12 listings"):
        run(analyze_manifest(tmp_path, ks=[2, 12]))
    with pytest.raises(ManifestError, match="analyze.ks: with analyze.k_step = 2 give"):
        analyze_manifest(tmp_path, ks=[2, 4, 6], k_step=2)
    with pytest.raises(ManifestError, match="analyze.ks: 1 clusters cannot be scored"):
        analyze_manifest(tmp_path, ks=[1, 3])
    with pytest.raises(ManifestError, match="analyze.fuse: 'image' is named twice"):
        analyze_manifest(tmp_path, fuse=["image:0.5", "image:0.2"])


def test_the_cli_runs_the_stage():
    assert STAGES["analyze"][0] == "trainer.analyze.stage:run"
