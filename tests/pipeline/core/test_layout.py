"""The output layout is spelled in one module: no other source file names a path segment of the contract."""

import re
from pathlib import Path

from pipeline.core.layout import OutputLayout, part_name

ROOT = Path(__file__).resolve().parents[3]
SOURCES = ["pipeline", "trainer", "bench"]
SEGMENTS = ("embeddings", "status", "metadata", "classes", "faults", "pairs", "runs", "publish", "bridge",
            "condensed", "analysis", "checkpoints", "chunks", "index")
FILES = ("precompute.json", "quintuples.parquet", "neighbors.parquet", "heads.safetensors", "metrics.json",
         "summary.json", "report.json", "clusters.parquet", "bundle.json", "checksums.sha256")
SEG = "|".join(SEGMENTS)
# a path built with `/ "segment"`, a literal that starts or contains "segment/", or a contract file name
PATTERNS = [
    re.compile(rf"/\s*[\"']({SEG})[\"']"),
    re.compile(rf"[\"'](?:[\w.-]*/)?({SEG})/"),
    re.compile(r"[\"'](?:[\w.-]*/)*(" + "|".join(re.escape(f) for f in FILES) + r")[\"']"),
]
LAYOUT = ROOT / "pipeline" / "core" / "layout.py"


def offenders() -> list[str]:
    found = []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == LAYOUT:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                if code.lstrip().startswith(("\"\"\"", "'''")) or not code.strip():
                    continue
                for pattern in PATTERNS:
                    if pattern.search(code):
                        found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
                        break
    return found


def test_no_module_but_the_layout_spells_output_paths():
    bad = offenders()
    assert not bad, "output paths spelled outside pipeline/core/layout.py:\n" + "\n".join(bad)


def test_the_grep_catches_a_spelled_path(tmp_path):
    # the patterns themselves must match what they are meant to catch
    lines = ['x = out / "embeddings" / m', 'p = "pairs/quintuples.parquet"', 'q = root / "runs"',
             "h = d / 'heads.safetensors'"]
    assert all(any(p.search(line) for p in PATTERNS) for line in lines)
    assert not any(p.search('log.info("embeddings written")') for p in PATTERNS)


def test_layout_paths_match_the_contract(tmp_path):
    lay = OutputLayout(tmp_path)
    assert lay.embedding_part("image", "s-000") == tmp_path / "embeddings" / "image" / "part-s-000.parquet"
    assert lay.status_part("audio", "x") == tmp_path / "status" / "audio" / "part-x.parquet"
    assert lay.metadata_part("x") == tmp_path / "metadata" / part_name("x")
    assert lay.classes == tmp_path / "classes" / "text.parquet"
    assert lay.pairs.quintuples == tmp_path / "pairs" / "quintuples.parquet"
    assert lay.pairs.index("audio") == tmp_path / "pairs" / "index" / "audio.faiss"
    assert lay.run("r1").heads == tmp_path / "runs" / "r1" / "heads.safetensors"
    assert lay.run("r1").metrics == tmp_path / "runs" / "r1" / "metrics.json"
    assert lay.bridge("b").embeddings("audio") == tmp_path / "bridge" / "b" / "embeddings" / "audio"
    assert lay.condensed("c-10").metadata == tmp_path / "condensed" / "c-10" / "metadata"
    assert lay.analysis("a").report_md == tmp_path / "analysis" / "a" / "report.md"
    assert lay.precompute_summary == tmp_path / "precompute.json"
