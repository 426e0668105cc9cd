"""Slurm arrays: each task takes its slice of the shards from its environment, as a rank would."""

from __future__ import annotations

import pytest

from pipeline.core.manifest import ManifestError, load
from pipeline.ingest.shards import split_by
from pipeline.precompute.slurm import ARRAY_VARIABLES, ArrayTask, array_task, partition
from pipeline.precompute.stage import run
from tests.conftest import MODS, write_manifest
from tests.pipeline.precompute.compare import assert_same_as_local


@pytest.mark.parametrize(("env", "want"), [
    ({}, None),
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}, ArrayTask(2, 3, 2)),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_MAX": "7"}, ArrayTask(1, 4, 5)),
    # --array=4-7 with COUNT set as well: COUNT is taken, the index counts from MIN
    ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_MAX": "7",
      "SLURM_ARRAY_TASK_COUNT": "4"}, ArrayTask(3, 4, 7)),
    # --array=0-20:5 -> ids 0, 5, 10, 15, 20
    ({"SLURM_ARRAY_TASK_ID": "15", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "20",
      "SLURM_ARRAY_TASK_STEP": "5"}, ArrayTask(3, 5, 15)),
])
def test_array_task_from_the_environment(env, want):
    assert array_task(env) == want


@pytest.mark.parametrize(("env", "message"), [
    ({"SLURM_ARRAY_TASK_ID": "1"}, "neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "3"}, "SLURM_ARRAY_TASK_ID: expected an integer"),
    # --array=1,5,9: MIN 1, MAX 9, COUNT 3 -- id 5 is not the second of three evenly spaced ids
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "9",
      "SLURM_ARRAY_TASK_COUNT": "3"}, "cannot split the shards; use a range"),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3"}, "is not one of 3"),
])
def test_an_array_that_cannot_split_is_an_error_naming_the_variable(env, message):
    with pytest.raises(ManifestError, match=message):
        array_task(env)


def test_array_tasks_and_ranks_split_the_shards_once():
    """Task a of A with rank r of W: every shard in exactly one of the A * W slices."""
    shards = list(range(23))
    slices = []
    for task in range(3):
        for rank in range(2):
            p = partition(rank, 2, {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "3"})
            assert p.count == 6 and p.array.index == task
            slices.append(split_by(shards, p.index, p.count))
    assert sorted(s for sl in slices for s in sl) == shards
    assert partition(1, 4, {}).to_json()["slurm_array_task"] is None


@pytest.fixture()
def no_array_env(monkeypatch):
    for name in ARRAY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_three_array_tasks_cover_every_part_once_and_equal_one_run(tiny_shards, tiny_clip, tiny_audio, tmp_path,
                                                                   no_array_env):
    whole = load(write_manifest(tmp_path / "whole.toml", tiny_shards["pattern"], tmp_path / "whole", tiny_clip,
                                tiny_audio))
    run(whole)
    array = load(write_manifest(tmp_path / "array.toml", tiny_shards["pattern"], tmp_path / "array", tiny_clip,
                                tiny_audio))
    shards_by_task, parts = [], 0
    for task in (0, 1, 2):  # --array=10-12: one after another, into one output
        for name, value in (("ID", 10 + task), ("MIN", 10), ("MAX", 12)):
            no_array_env.setenv(f"SLURM_ARRAY_TASK_{name}", str(value))
        summary = run(array)
        assert summary["partition"]["index"] == task and summary["partition"]["count"] == 3
        assert summary["partition"]["slurm_array_task"]["task_id"] == 10 + task
        shards_by_task.append(summary["ranks"][0]["shards"])
        parts += summary["ranks"][0]["parts_written"]
    assert shards_by_task == [["shard-000000", "shard-000003"], ["shard-000001"], ["shard-000002"]]
    assert parts == tiny_shards["shards"] * len(MODS)
    assert_same_as_local(tmp_path / "whole", tmp_path / "array")


def test_array_tasks_share_the_output_lock_and_hold_their_slices(tmp_path):
    from pipeline.core.layout import OutputLayout
    from pipeline.precompute.lock import OutputBusy
    from pipeline.precompute.stage import _take_locks

    layout = OutputLayout(tmp_path)
    task = {i: partition(0, 1, {"SLURM_ARRAY_TASK_ID": str(i), "SLURM_ARRAY_TASK_COUNT": "3"}) for i in range(3)}
    first, second = _take_locks(layout, task[0]), _take_locks(layout, task[1])  # side by side
    with pytest.raises(OutputBusy, match="another `bindery precompute`"):
        _take_locks(layout, task[1])  # the same slice twice
    with pytest.raises(OutputBusy, match="Slurm array tasks"):
        _take_locks(layout, partition(0, 1, {}))  # a plain run while tasks run
    for lock in first + second:
        lock.release()
    plain = _take_locks(layout, partition(0, 1, {}))
    with pytest.raises(OutputBusy):
        _take_locks(layout, task[2])  # a task while a plain run runs
    plain[0].release()
    for lock in _take_locks(layout, task[2]):
        lock.release()
