"""`hydra/launcher=parallel`: up to `n_jobs` runs of a sweep at once, each in a process of its own.

joblib's workers, which this replaces, served several runs each, and joblib ends every worker when
one of them dies: the OOM killer ending one run stopped the sweep and killed the others without a
checkpoint. A SIGTERM to the sweep's process did not reach them at all (they trained on as
orphans). Here a run that dies is that run alone (its metrics.json says so; the others go on), and
a signal to the sweep's process is passed to every run in progress, each of which saves and stops
(training/preemption.py; SIGUSR1 and SIGUSR2, SLURM's and submitit's warnings, go on as SIGTERM,
which a run handles outside training too); no new run starts, the report is written, and the
sweep exits 128 + the signal. The runs leave the terminal's process group, so a Ctrl+C reaches
each one once (from here), and get SIGTERM if this process dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import FrameType
from typing import Any

import cloudpickle
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import open_dict

from captioner.errors import PREEMPTED_BASE, PREEMPTION_SIGNALS

log = logging.getLogger(__name__)

SIGNALS = PREEMPTION_SIGNALS
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies

stopped_by: int | None = None  # the signal that stopped this sweep (compare/sweep_end.py exits with it)
runs_started = 0  # in this process (errors.run_hydra_app: an exit 1 after runs began is no user error)
runs_lost = 0  # of this sweep: ended without a return (killed, crashed; sweep_end.py exits 1)
LINGER_S = 60.0  # a run that sent its return and is still alive this long after is ended


def _run_one(payload: bytes, results: Connection, launcher_pid: int) -> None:
    """In the run's own process: the Hydra job, its JobReturn sent back."""
    os.setpgrp()  # out of the terminal's group: a Ctrl+C comes from the launcher, once
    if sys.platform == "linux":  # the launcher killed (kill -9): stop as if preempted, not orphaned
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != launcher_pid:  # it died before that took effect
            sys.exit(PREEMPTED_BASE + signal.SIGTERM)
    index, overrides, hydra_context, config, task_function, singleton_state = cloudpickle.loads(payload)
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{index}"
        sweep_config.hydra.job.num = index
    HydraConfig.instance().set_config(sweep_config)
    returned = run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    results.send_bytes(cloudpickle.dumps(returned))


class _Forwarder:
    """The launcher's signal handlers: the first signal stops new runs; every one reaches the runs."""

    def __init__(self, running: dict[int, multiprocessing.Process]):
        self.running = running
        self.signum: int | None = None
        main = threading.current_thread() is threading.main_thread()  # where signals are handled
        self._previous = {s: signal.getsignal(s) for s in SIGNALS} if main else {}
        for signum in self._previous:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            log.warning("received %s: passing it to the %d run(s) in progress; no new run starts",
                        signal.Signals(signum).name, len(self.running))
            self.signum = signum
        for process in self.running.values():
            self.forward(process, signum)

    @staticmethod
    def forward(process: multiprocessing.Process, signum: int) -> None:
        # SIGUSR1/2 would end a run outside training (their default action); SIGTERM stops it there too
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGTERM if signum in (signal.SIGUSR1, signal.SIGUSR2) else signum)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _ended_without_a_return(overrides: Sequence[str], exitcode: int | None) -> JobReturn:
    """What the sweeper gets for a run whose process ended without sending its return: None, a
    failed trial for a sweeper like Optuna (NaN made optuna 2 raise); the run's metrics.json, where
    it got to write one, says what became of it."""
    global runs_lost
    runs_lost += 1
    how = f"killed by {signal.Signals(-exitcode).name}" if exitcode and exitcode < 0 else f"exit {exitcode}"
    log.warning("the run with %s ended without a result (%s)", " ".join(filter_overrides(overrides)), how)
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run the jobs, at most `launcher.n_jobs` at once; their returns in the input order. After a
    signal: the runs in progress stop, none starts, the sweep's end (its report) runs here, and the
    process exits 128 + the signal."""
    global stopped_by, runs_started
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info("launching %d runs, %d at a time, each in its own process; sweep folder %s",
             len(job_overrides), launcher.n_jobs, sweep_dir)
    for index, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", initial_job_idx + index, " ".join(filter_overrides(overrides)))

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state of this one's
    singleton_state = Singleton.get_state()
    waiting = list(enumerate(job_overrides))
    running: dict[int, multiprocessing.Process] = {}
    connections: dict[int, Connection] = {}
    returns: dict[int, JobReturn] = {}
    returned_at: dict[int, float] = {}
    forwarder = _Forwarder(running)
    try:
        while running or (waiting and forwarder.signum is None):
            while waiting and forwarder.signum is None and len(running) < launcher.n_jobs:
                index, overrides = waiting.pop(0)
                payload = cloudpickle.dumps((initial_job_idx + index, overrides, launcher.hydra_context,
                                             launcher.config, launcher.task_function, singleton_state))
                receiving, sending = context.Pipe(duplex=False)
                process = context.Process(target=_run_one, args=(payload, sending, os.getpid()),
                                          name=f"run {initial_job_idx + index}")
                process.start()
                runs_started += 1
                sending.close()  # the child's end: EOF here once it exits
                running[index], connections[index] = process, receiving
                if forwarder.signum is not None:  # it came while this one was starting
                    forwarder.forward(process, forwarder.signum)
            wait([*connections.values(), *(p.sentinel for p in running.values())], timeout=1.0)
            for index in list(running):
                connection, process = connections[index], running[index]
                if index not in returns and connection.poll():
                    # EOFError: it ended without sending; OSError: it was killed while sending
                    with contextlib.suppress(EOFError, OSError):
                        returns[index] = cloudpickle.loads(connection.recv_bytes())
                        returned_at[index] = time.monotonic()
                if process.is_alive() and time.monotonic() - returned_at.get(index, math.inf) > LINGER_S:
                    log.warning("%s sent its result %.0f s ago and has not ended: ending it",
                                process.name, LINGER_S)
                    process.terminate()
                if not process.is_alive():
                    process.join()
                    connection.close()
                    del running[index], connections[index]
                    if index not in returns:
                        returns[index] = _ended_without_a_return(job_overrides[index], process.exitcode)
    finally:
        forwarder.restore()
        for process in running.values():  # an error here: no run is left behind
            process.terminate()
    if forwarder.signum is None:
        return [returns[index] for index in sorted(returns)]
    stopped_by = forwarder.signum
    if waiting:
        log.warning("%d run(s) not started; the same command with ckpt_path=last "
                    "hydra.sweep.dir=%s starts them", len(waiting), sweep_dir)
    # The sweeper is not handed the stopped runs' returns (Optuna would judge interrupted trials):
    # the sweep ends here, with its report.
    launcher.hydra_context.callbacks.on_multirun_end(config=launcher.config)
    raise SystemExit(PREEMPTED_BASE + stopped_by)
