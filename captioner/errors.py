"""What a user can fix: the errors that entry points print as one line and exit 2 for.

Every "you gave me something wrong" error of this project (a bad option, a missing or malformed
dataset, features file, weights file, image or checkpoint) subclasses `UserError`, so an entry
point catches them all with `except UserError`; this module imports nothing of the project.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

# Exit codes every entry point uses (README: "Exit codes").
OK = 0
FAILED = 1  # a run failed, or a sweep had a failed run
USER_ERROR = 2  # a bad option, a missing or malformed file: the message says what to fix
# preempted by a signal: 128 + its number (SIGTERM 143, SIGINT 130, SIGUSR1 138, SIGUSR2 140)
PREEMPTED_BASE = 128
# The signals that preempt a run (training/preemption.py) and that the parallel launcher passes on
# to its runs: what schedulers send before they kill (SLURM's `--signal=USR1@90`; submitit's SLURM
# jobs get SIGUSR2 before their time limit), and Ctrl+C.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


class UserError(Exception):
    """Something the user gave (an option, a path, a file) is wrong; the message names it and the fix."""


class ConfigError(UserError, ValueError):
    """An option of the composed config has a value that cannot work."""


def verbose() -> bool:
    """Tracebacks for user errors too: `HYDRA_FULL_ERROR=1` (Hydra's own switch) or `CAPTIONER_VERBOSE=1`."""
    return any(os.environ.get(name, "") not in ("", "0")
               for name in ("HYDRA_FULL_ERROR", "CAPTIONER_VERBOSE"))


def exit_for_user_error(error: BaseException, prog: str) -> None:
    """Print `prog: error: <message>` (the traceback too when verbose) and exit 2."""
    if verbose():
        traceback.print_exception(error)
    message = " ".join(str(error).split("\n")) or type(error).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(USER_ERROR)


class SweepRunsFailed(SystemExit):
    """A sweep ended with runs that did not complete (its end's callback says which): exit 1, also
    where the runs were processes of their own and this one never saw a job start (submitit)."""

    def __init__(self) -> None:
        super().__init__(1)


def _runs_started_elsewhere() -> bool:
    """Whether `hydra/launcher=parallel` started runs, each in a process of its own (where their
    `job_started` flags are set, not in this one)."""
    launcher = sys.modules.get("captioner.launch.process_per_run")
    return launcher is not None and launcher.runs_started > 0


def _after_a_job_failed(exit: BaseException) -> bool:
    """Whether Hydra ends (exit 1, or re-raising under HYDRA_FULL_ERROR=1) over a sweep job that a
    launcher reports lost (submitit's error for a job killed by the scheduler, out of memory or out
    of time): not the command line's fault."""
    error: BaseException | None = exit
    while error is not None:
        if type(error).__module__.startswith("submitit"):
            return True
        error = error.__context__
    return False


def run_hydra_app(main: Callable[[], Any], job_started: Callable[[], bool]) -> None:
    """Run a `@hydra.main` function with this project's exit codes.

    Hydra exits 1 after printing its own errors about the command line (unknown group, bad
    override), which happen before the job starts: those are user errors, exit 2. With
    `HYDRA_FULL_ERROR=1` Hydra re-raises instead: user errors still exit 2, after the traceback.
    """
    try:
        main()
    except SystemExit as exit:
        ran = job_started() or _runs_started_elsewhere() or _after_a_job_failed(exit)
        if ran:  # a preemption or a lost job ended the sweep: its runs so far, reported
            _report_cut_off_sweep()
        if exit.code == 1 and not isinstance(exit, SweepRunsFailed) and not ran:
            sys.exit(USER_ERROR)
        raise
    except Exception as error:
        from hydra.errors import HydraException

        if job_started() or _runs_started_elsewhere() or _after_a_job_failed(error):  # (HYDRA_FULL_ERROR=1)
            _report_cut_off_sweep()
        if isinstance(error, (HydraException, UserError)):
            traceback.print_exception(error)
            sys.exit(USER_ERROR)
        raise


def _report_cut_off_sweep() -> None:
    """The report of a sweep that ended in an exception after its jobs began, where one was under
    way (sweep_end.py; only then: reading its folder's name would make the folder)."""
    sweep_end = sys.modules.get("captioner.compare.sweep_end")
    if sweep_end is not None:
        sweep_end.report_cut_off_sweep()
