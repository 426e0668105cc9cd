from pathlib import Path

from pipeline.core import manifest as mf
from pipeline.core.manifest_doc import BEGIN, END, reference

README = Path(__file__).resolve().parents[3] / "README.md"


def test_every_key_has_a_meaning():
    table_rows = [line for line in reference().splitlines() if line.startswith("| `")]
    n_fields = sum(len(mf.dataclasses.fields(c)) for c in [*mf.SECTIONS.values(), *mf.MODALITY_SECTIONS.values()])
    assert len(table_rows) == n_fields
    assert all(not row.rstrip().endswith("|  |") for row in table_rows), [r for r in table_rows if r.endswith("|  |")]


def test_readme_carries_the_generated_reference():
    text = README.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] + "\n" == reference(), "README's manifest reference is stale: run python -m pipeline.core.manifest_doc"
