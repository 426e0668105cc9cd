"""The gpu marker: a gpu test on a machine without CUDA fails with a clear message instead of skipping."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

pytest_plugins = ["pytester"]

GPU_TESTS = """
import pytest

@pytest.mark.gpu
def test_on_the_gpu():
    assert True

def test_anywhere():
    assert True
"""


def _run(pytester, monkeypatch, cuda: bool, *args: str):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    pytester.makeconftest("from tests.conftest import pytest_runtest_setup  # noqa: F401")
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a CUDA device\n")
    pytester.makepyfile(GPU_TESTS)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)


def test_a_gpu_test_without_cuda_fails_naming_the_fix(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, cuda=False)
    result.assert_outcomes(passed=1, errors=1)  # failed in setup, before its fixtures were built
    result.stdout.fnmatch_lines(["*needs a CUDA device: run `just test-gpu` on a GPU machine*"])
    assert "skipped" not in result.stdout.str()


def test_a_gpu_test_with_cuda_runs_and_ci_deselects_it(pytester, monkeypatch):
    _run(pytester, monkeypatch, cuda=True).assert_outcomes(passed=2)
    result = _run(pytester, monkeypatch, False, "-m", "not gpu")  # what CI runs: the gpu test is deselected
    result.assert_outcomes(passed=1, deselected=1)


def _is_gpu_mark(node: ast.expr) -> bool:
    return ast.unparse(node) == "pytest.mark.gpu"


def _skips(fn: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and ast.unparse(n.func) in ("pytest.skip", "skip") for n in ast.walk(fn))


def test_no_gpu_test_skips_itself():
    """A gpu test must not call pytest.skip: the marker and the hook decide where it runs."""
    root = Path(__file__).resolve().parent
    gpu_tests, offenders = 0, []
    for path in sorted(root.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any(_is_gpu_mark(d) for d in node.decorator_list):
                gpu_tests += 1
                if _skips(node):
                    offenders.append(f"{path.relative_to(root)}::{node.name}")
    assert gpu_tests >= 4  # the walk finds the suite's gpu tests (pair x2, precompute, trainer)
    assert not offenders, f"gpu tests that skip themselves: {offenders}"
