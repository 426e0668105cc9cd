"""The CSV tracker writes long-format rows an accelerate run can log any names into."""

from __future__ import annotations

import csv

from trainer.tracking import CSVTracker


def test_csv_tracker_appends_step_name_value(tmp_path):
    tracker = CSVTracker(tmp_path / "train_log.csv")
    tracker.start()
    tracker.log({"loss": 2.5, "lr": 1e-3}, step=10)
    tracker.log({"loss": 1.25}, step=20)
    CSVTracker(tmp_path / "train_log.csv").start()  # a resumed run keeps the rows already written
    rows = list(csv.reader((tmp_path / "train_log.csv").open()))
    assert rows == [["step", "name", "value"], ["10", "loss", "2.5"], ["10", "lr", "0.001"], ["20", "loss", "1.25"]]
    assert tracker.tracker == tmp_path / "train_log.csv"
