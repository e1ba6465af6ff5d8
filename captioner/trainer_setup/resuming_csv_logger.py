"""Lightning's CSV logger, except that a resumed run goes on with the log of the run it resumes.

Lightning's writer deletes `metrics.csv` when its folder is not empty ("Previous log files in this
directory will be deleted"), so a resume in place lost the log of everything before the kill. Here
the rows logged before the checkpoint's step are kept and the rows from that step on, which the
resumed run logs again, are dropped: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import csv
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from captioner.training.lightning_seams import CSVWriterWithLogDirHook, cached_csv_writer


class ResumingCSVLogger(CSVLogger):
    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any) -> None:
        """`resume_step`: the global step of the checkpoint this run resumes from (None: a new run)."""
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        return cached_csv_writer(self, lambda: ContinuingWriter(self.log_dir, self.resume_step))


class ContinuingWriter(CSVWriterWithLogDirHook):
    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def prepare_log_dir(self) -> None:  # called once, before any row is written
        if self.resume_step is None or not self.filesystem.isfile(self.metrics_file_path):
            super().prepare_log_dir()
            return
        with self.filesystem.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            header = list(reader.fieldnames or [])
            kept = [row for row in reader if row.get("step") and int(float(row["step"])) < self.resume_step]
        with self.filesystem.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(kept)
        self.metrics_keys = sorted(header)  # rows to come are appended under the same header
