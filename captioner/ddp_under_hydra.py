"""Lightning DDP inside a Hydra job: ranks 1..N-1 must re-run this job, not the command line.

Lightning starts the other ranks by re-running `sys.argv` with `hydra.run.dir` appended. In a
multirun that argv is the whole sweep (`-m`, comma lists), so each rank would start a sweep of
its own in the wrong folder (Lightning #11300, #18175; Hydra #2070). The command built here is
this job alone: the same config (and config dir), this job's overrides, this job's folder.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pytorch_lightning.strategies.launchers import subprocess_script


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def job_command(local_rank: int) -> tuple[Sequence[str], str]:
    """(command, working directory) that re-runs the current Hydra job as DDP rank `local_rank`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import to_absolute_path

    import __main__

    hydra = HydraConfig.get()
    if __main__.__spec__ is None:
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


def relaunch_ddp_ranks_as_this_job() -> None:
    """Make Lightning's process launcher use `job_command` (a no-op outside Hydra)."""
    subprocess_script._hydra_subprocess_cmd = lambda local_rank: job_command(local_rank)
