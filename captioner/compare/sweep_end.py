"""A Hydra callback: when a multirun ends, write its report and print the comparison table; with
`logger=wandb`, log the per-image comparison to the sweep's W&B group too."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from captioner.compare.content_groups import load_groups
from captioner.compare.html_report import browser_data
from captioner.compare.report import print_report, swept_factors, write_report
from captioner.compare.wandb_table import log_comparison_table
from captioner.errors import PREEMPTED_BASE, SweepRunsFailed
from captioner.records.sweep_runs import RunResult, collect_runs, sweep_group
from captioner.settings.reading import logger_settings
from captioner.trainer_setup.loggers import wandb_mode

log = logging.getLogger(__name__)


# The sweep under way in this process (its callback and config), until its end has been reported:
# a sweep that ends in an exception (Optuna with no completed trial, a launcher that lost a job, a
# preemption under the basic launcher) gets no `on_multirun_end` from Hydra; `report_cut_off_sweep`
# writes its report then.
_open_sweep: tuple[ReportAtSweepEnd, DictConfig] | None = None


def report_cut_off_sweep() -> None:
    """Write the report of a sweep that ended without Hydra's end-of-sweep call, as far as its runs
    got (call it only once its jobs began). Never raises: the sweep's own error is what the user sees."""
    global _open_sweep
    if _open_sweep is None:
        return
    callback, config = _open_sweep
    _open_sweep = None
    try:
        callback._report_if_train(config)
    except SweepRunsFailed:  # runs did not complete: the sweep's own error already says it ended badly
        pass
    except Exception as error:
        log.error("the sweep's report was not written: %s: %s", type(error).__name__, error)


class ReportAtSweepEnd(Callback):
    """Only for `job_name` (train.py): a `captioner.prepare` sweep has nothing to report."""

    def __init__(self, job_name: str = "train") -> None:
        self.job_name = job_name

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _open_sweep
        _open_sweep = (self, config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _open_sweep
        _open_sweep = None
        # hydra/launcher=parallel's record, where it ran (not imported otherwise: it needs cloudpickle)
        launcher = sys.modules.get("captioner.launch.process_per_run")
        try:
            self._report_if_train(config)
        finally:
            if launcher is not None and launcher.stopped_by:  # it passed a signal to its runs
                raise SystemExit(PREEMPTED_BASE + launcher.stopped_by)
        if launcher is not None and launcher.runs_lost:  # runs that ended before writing anything
            log.error("%d run(s) ended without a result (see the log above)", launcher.runs_lost)
            raise SweepRunsFailed()

    def _report_if_train(self, config: DictConfig) -> None:
        if config.hydra.job.name != self.job_name:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            runs = collect_runs(sweep_dir)
        except FileNotFoundError as error:  # e.g. a launcher that wrote elsewhere
            log.warning("no sweep report: %s", error)
            return
        failed = [run for run in runs if run.status != "completed"]
        # Hydra turns an exception raised here into a warning and exits 0: a report that could
        # not be written is logged, and the exit status still says what became of the runs.
        try:
            self._report(config, sweep_dir, runs)
        except Exception as error:
            log.error("the sweep's report was not written: %s: %s", type(error).__name__, error)
            raise SweepRunsFailed() from None
        if failed:
            log.error("%d of %d runs did not complete: %s", len(failed), len(runs),
                      ", ".join(str(run.path) for run in failed))
            # The others finished and are in the report; the exit status still says not all did.
            raise SweepRunsFailed()

    @staticmethod
    def _report(config: DictConfig, sweep_dir: Path, runs: list[RunResult]) -> None:
        # Built once: the page's image browser and, with W&B, the comparison table show the same data.
        browser = browser_data(runs, swept_factors(runs), load_groups(), sweep_dir)
        report = write_report(sweep_dir, runs, browser=browser)
        print_report(runs)
        print(f"report: {report} and {report.with_suffix('.html')}")
        try:
            wandb = next((entry.options for entry in logger_settings(config) if entry.kind == "wandb"), None)
            if wandb is not None:  # the runs went to W&B: the per-image comparison goes there too
                group = wandb.get("group") or sweep_group(config.sweep_name, sweep_dir)
                log_comparison_table(sweep_dir, browser, group, wandb.get("project") or "captioner",
                                     wandb.get("entity"), mode=wandb_mode(wandb.get("offline")))
        except Exception as error:  # W&B down or misconfigured: the report on disk stands
            log.warning("the W&B comparison table was not logged: %s", error)
