"""A tiny CSV tracker for accelerate (accelerate has no file tracker built in).

Rows are long-format ``step,name,value`` so a step may log any set of names.
"""

from __future__ import annotations

import csv
from pathlib import Path

from accelerate.tracking import GeneralTracker


class CSVTracker(GeneralTracker):
    """``accelerator.log(values, step)`` -> appended rows of the CSV file ``path`` (a run's ``log``)."""

    name = "csv"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.write_text("step,name,value\n")

    @property
    def tracker(self):
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        """The run's configuration lives in config.json (written at export), not in the CSV."""

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        if not self.path.exists():
            self.start()
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f)
            for name, value in values.items():
                writer.writerow([step, name, float(value)])
