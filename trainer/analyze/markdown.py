"""``report.md``: the page a person reads, rendered from ``report.json``'s dict."""

from __future__ import annotations

from typing import Any

SCORE_COLUMNS = (("silhouette", "silhouette ↑"), ("calinski_harabasz", "CH ↑"), ("davies_bouldin", "DB ↓"))
LABEL_COLUMNS = (("nmi", "NMI"), ("ari", "ARI"), ("purity", "purity"))


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"


def _cell(text: str) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def _setting(s: dict | None) -> str:
    return "–" if s is None else f"dim {s['dim']}, k {s['k']}"


def _intro(r: dict) -> list[str]:
    sp = r["space"]
    fused = ", ".join(f"{m} × {w:g} ({sp['modalities'][m]}; {sp['items'][m]} items)" for m, w in sp["weights"].items())
    grouping = f"samples grouped by `{sp['group_key']}`" if sp["group_key"] else "each sample its own listing"
    lacking = " and ".join(f"{n} without {m}" for m, n in sp["lacking"].items() if n)
    space = f"run `{sp['run']}`'s bound space" if sp["run"] else "the stores as they are (one space)"
    return [f"# Fused-embedding analysis `{r['name']}`", "",
            f"**{sp['listings']} listings** in {space}, {grouping}; fused = weighted mean of {fused}, "
            f"{'L2-normalised' if sp['normalize'] else 'not normalised (raw mean, as the paper)'}"
            + (f"; listings that lacked a fused modality ({lacking}) were "
               f"{'dropped' if sp['missing'] == 'drop' else 'fused from what they have'}"
               if lacking else "") + ".",
            f"Labels (`{sp['label_key']}`): {sp['labelled']} listings." if sp["label_key"] else "No labels.", ""]


def _choice(r: dict) -> list[str]:
    c, sc = r["choice"], r["choice"]["scores"]
    lines = ["## The choice", "",
             f"**dim {c['dim']}, k {c['k']}**: silhouette {_num(sc['silhouette'])}, Calinski–Harabasz "
             f"{_num(sc['calinski_harabasz'], 1)}, Davies–Bouldin {_num(sc['davies_bouldin'])}"
             + (f"; against the labels NMI {_num(sc['nmi'])}, ARI {_num(sc['ari'])}, purity {_num(sc['purity'])}"
                if sc["nmi"] is not None else "") + ".", "", f"Rule: {c['rule']}", "",
             "Each score alone would pick: " + "; ".join(f"{n} {_setting(s)}" for n, s in c["best_by_score"].items())
             + "."]
    if c["best_by_nmi"] is not None:
        agree = c["best_by_nmi"]["dim"] == c["dim"]
        lines.append(f"The labels' best setting (highest NMI) is {_setting(c['best_by_nmi'])}: the scores' dim "
                     f"{'agrees' if agree else 'differs'}.")
    lines += ["", f"![scores against dim]({r['plots']['scores']})", ""]
    if "labels" in r["plots"]:
        lines += [f"![label agreement against dim]({r['plots']['labels']})", ""]
    return lines


def _tables(r: dict) -> list[str]:
    lines = ["## Explained variance", "", "| dim | explained variance |", "|---:|---:|"]
    lines += [f"| {d} | {_num(v)} |" for d, v in r["explained_variance"].items()]
    cols = list(SCORE_COLUMNS) + (list(LABEL_COLUMNS) if r["choice"]["scores"]["nmi"] is not None else [])
    lines += ["", "## Scores per (dim, k)", "", "| dim | k | " + " | ".join(t for _, t in cols) + " | votes |",
              "|---:|---:|" + "---:|" * (len(cols) + 1)]
    for row in r["scores"]:
        mark = "**" if (row["dim"], row["k"]) == (r["choice"]["dim"], r["choice"]["k"]) else ""
        cells = [_num(row[n], 1 if n == "calinski_harabasz" else 3) for n, _ in cols] + [str(row["votes"] or "")]
        lines.append(f"| {mark}{row['dim']}{mark} | {mark}{row['k']}{mark} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _clusters(r: dict) -> list[str]:
    name = f"d{r['choice']['dim']}_k{r['choice']['k']}"
    lines = [f"## Clusters of {name}", "", f"![2-D map]({r['plots']['map']})", "",
             f"![cluster sizes]({r['plots']['sizes']})", "",
             "The listings nearest each centroid (in the PCA space the clustering saw), largest cluster first.", ""]
    for c in r["clusters"]:
        labels = ", ".join(f"{n} {k}" for n, k in c["labels"]) or "none"
        lines += [f"### Cluster {c['cluster']}: {c['size']} listings (labels: {labels})", "",
                  "| listing | label | distance | caption |", "|---|---|---:|---|"]
        lines += [f"| `{_cell(n['key'])}` | {_cell(n['label'])} | {_num(n['distance'])} | {_cell(n['caption'])} |"
                  for n in c["neighbours"]]
        lines.append("")
    return lines


def _queries(r: dict) -> list[str]:
    if not r["queries"]:
        return []
    lines = ["## Cross-modal retrieval", "",
             "Each query item retrieves the nearest listings by cosine (never its own listing); precision@k is the "
             "share of them with the query's label, over queries whose label another listing carries.", "",
             "| query | queries | scored | k | precision@k | chance | × chance |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m, q in r["queries"].items():
        ratio = q["precision_at_k"] / q["chance"] if q["precision_at_k"] is not None and q["chance"] else None
        lines.append(f"| {m} | {q['queries']} | {q['scored']} | {q['k']} | {_num(q['precision_at_k'])} | "
                     f"{_num(q['chance'])} | {_num(ratio, 1)} |")
    lines.append("")
    for e in r["query_examples"]:
        caption = f"; its sample's caption: {_cell(e['caption'])}" if e["caption"] else ""
        lines += [f"**{e['modality']} `{_cell(e['query'])}`** ({e['label'] or 'no label'}{caption})", ""]
        lines += [f"{i}. `{_cell(k)}` ({lab or 'no label'}, {_num(s)}): {_cell(cap)}"
                  for i, (k, lab, cap, s) in enumerate(e["listings"], 1)]
        lines.append("")
    return lines


def _provenance(r: dict) -> list[str]:
    sp = r["space"]
    sample = "all listings" if sp["silhouette_sample"] is None else f"a seeded sample of {sp['silhouette_sample']}"
    return ["## How it was made", "",
            f"PCA: {sp['pca_solver']}; k-means: {'FAISS' if sp['large'] else 'scikit-learn'}; silhouette over "
            f"{sample}; map: {sp['map_method']}; seed {sp['seed']}. Every number is in `report.json`; the cluster "
            "of every listing at every (dim, k) is in `clusters.parquet`.", ""]


def render(report: dict) -> str:
    parts = [_intro(report), _choice(report), _tables(report), _clusters(report), _queries(report),
             _provenance(report)]
    return "\n".join(line for part in parts for line in part)
