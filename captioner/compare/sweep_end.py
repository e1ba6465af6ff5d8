"""A Hydra callback: when a multirun ends, write its report and print the comparison table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from captioner.compare.report import collect_runs, print_report, write_report

log = logging.getLogger(__name__)


class ReportAtSweepEnd(Callback):
    """Only for `job_name` (train.py): a `captioner.prepare` sweep has nothing to report."""

    def __init__(self, job_name: str = "train") -> None:
        self.job_name = job_name

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.job.name != self.job_name:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            runs = collect_runs(sweep_dir)
        except FileNotFoundError as error:  # e.g. a launcher that wrote elsewhere
            log.warning("no sweep report: %s", error)
            return
        report = write_report(sweep_dir, runs)
        print_report(runs)
        print(f"report: {report}")
        failed = [run for run in runs if run.status != "completed"]
        if failed:
            log.error("%d of %d runs did not complete: %s", len(failed), len(runs),
                      ", ".join(str(run.path) for run in failed))
            # The others finished and are in the report; the exit status still says not all did.
            raise SystemExit(1)
