"""Lightning DDP inside a Hydra job: ranks 1..N-1 must re-run this job, not the command line.

Lightning starts the other ranks by re-running `sys.argv` with `hydra.run.dir` appended. In a
multirun that argv is the whole sweep (`-m`, comma lists), so each rank would start a sweep of
its own in the wrong folder (Lightning #11300, #18175; Hydra #2070). The command built here is
this job alone: the same config (and config dir), this job's overrides, this job's folder.

The basic launcher runs a sweep's jobs one after another in one process, so a DDP job must also
leave nothing behind: its process group and the rank variables Lightning puts in os.environ
would make the next job skip starting its ranks and talk to the previous job's dead ones.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from captioner.training.lightning_seams import swapped_hydra_subprocess_command

# The training command's module (captioner.train sets it before Hydra starts any worker process).
ENTRY_POINT = "CAPTIONER_ENTRY_POINT"
# What Lightning's process launcher sets in rank 0's own environment.
RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Rank 0's resume decision (a checkpoint's path, "" for a fresh start), inherited by the ranks it
# starts: they run the job as a single run, and `ckpt_path=last` resolved there searched every
# earlier run where the sweep's job starts fresh (one rank fresh, one resumed, or one refused).
RESUME_ENV = "CAPTIONER_RESUME_FROM"


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def job_command(local_rank: int) -> tuple[Sequence[str], str]:
    """(command, working directory) that re-runs the current Hydra job as DDP rank `local_rank`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import to_absolute_path

    import __main__

    hydra = HydraConfig.get()
    if os.environ.get(ENTRY_POINT):  # in a launcher's or submitit's process, sys.argv is not the job's
        command = [sys.executable, "-m", os.environ[ENTRY_POINT]]
    elif __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    for source in hydra.runtime.config_sources:
        if source.provider == "command-line":  # --config-dir, e.g. sweeps/
            command += ["--config-dir", source.path.removeprefix("file://")]
    command += ["--config-name", hydra.job.config_name, *hydra.overrides.task,
                f"hydra.run.dir={_quoted(hydra.runtime.output_dir)}",
                f"hydra.job.name={hydra.job.name}",  # keeps the job's logger names
                "hydra.output_subdir=null",  # rank 0 already wrote .hydra/
                "hydra/hydra_logging=disabled", "hydra/job_logging=disabled"]
    return command, hydra.runtime.cwd


def resume_of_started_rank() -> str | None:
    """In a DDP rank that rank 0 started: rank 0's resume decision (a path, "" for none); None in
    rank 0 or a process nobody started."""
    if os.environ.get("LOCAL_RANK", "0") == "0":
        return None
    return os.environ.get(RESUME_ENV)


@contextmanager
def ddp_job(resume_from: str | None = None) -> Iterator[None]:
    """Around one job: Lightning starts its ranks with `job_command`, handing them `resume_from`
    (RESUME_ENV); afterwards the process is clean."""
    saved = {name: os.environ.get(name) for name in (*RANK_VARIABLES, RESUME_ENV)}
    os.environ[RESUME_ENV] = resume_from or ""
    threads = torch.get_num_threads()  # Lightning divides the CPU threads among the ranks
    with swapped_hydra_subprocess_command(job_command):
        try:
            yield
        finally:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            torch.set_num_threads(threads)
