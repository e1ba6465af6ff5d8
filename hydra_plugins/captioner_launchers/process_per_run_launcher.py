"""`hydra/launcher=parallel`: the Hydra plugin; the work is in captioner/launch/process_per_run.py.

Hydra imports every module here when it starts: nothing heavy is imported at module level.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ProcessPerRunLauncher(Launcher):
    def __init__(self, n_jobs: int = 2) -> None:
        n_jobs = int(n_jobs)
        if n_jobs == -1:  # as joblib took it: one per CPU
            n_jobs = os.cpu_count() or 1
        if n_jobs < 1:
            raise ValueError(f"hydra.launcher.n_jobs={n_jobs}: expected at least 1 run at a time (or -1)")
        self.n_jobs = n_jobs
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from captioner.launch import process_per_run

        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context
        process_per_run.stopped_by, process_per_run.runs_lost = None, 0  # a new sweep

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from captioner.launch import process_per_run

        return process_per_run.launch(self, job_overrides, initial_job_idx)
