"""Preemption: SIGTERM, SIGINT, SIGUSR1 or SIGUSR2 during training asks for a checkpoint and a
clean stop; before training (extracting features, waiting for a GPU) it stops the run at once, as
preempted.

Schedulers (SLURM, Kubernetes, `kill`) send SIGTERM, or SIGUSR1 with `--signal=USR1@90`, some
seconds before they kill; submitit's SLURM jobs get SIGUSR2 before their time limit. The handler
only records the signal; `MidEpochCheckpoint` saves at the end of the batch in progress and raises
`Preempted`, whose exit code is 128 + the signal number (143 for SIGTERM). A second Ctrl+C stops
at once.

Lightning installs its own SIGTERM handler when fit starts (it raises mid-validation and saves
nothing outside SLURM), so `PreemptionSignals.install()` is called again from the callback once
training has started and takes over; whatever handled SIGUSR1 before (Lightning's SLURM
auto-requeue: `hpc_ckpt_*.ckpt` and `scontrol requeue`) is still called. When a fit ends,
Lightning puts back the handlers it found, and the callback takes SIGTERM and SIGINT over again:
a signal during the test or while the run writes its outputs still stops the run (and a sweep)
as a preemption. `restore()`, at the end of the run, puts back the handlers the run began with.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch

from captioner.errors import PREEMPTED_BASE, PREEMPTION_SIGNALS

log = logging.getLogger(__name__)

# SIGUSR2 among them: submitit's own handler raised in the middle of a training step, so the run
# ended `failed` with no checkpoint.
SIGNALS = PREEMPTION_SIGNALS


class Preempted(SystemExit):
    """Training stopped on a signal after saving a resumable checkpoint; exits 128 + signal number.

    A SystemExit: nothing in between (a sweep's per-run error handling) mistakes it for a failed
    run and goes on with the next one while the machine is being taken away.
    """

    def __init__(self, signum: int, checkpoint: str | None = None) -> None:
        super().__init__(PREEMPTED_BASE + int(signum))
        self.signum = int(signum)
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        saved = f"; saved {self.checkpoint}" if self.checkpoint else ""
        return f"preempted by {signal.Signals(self.signum).name}{saved}"


class PreemptionSignals:
    """Records the first preemption signal instead of dying; `restore()` puts back the handlers
    there were when it was made (in the main thread)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._at_once = False  # before training: stop where the signal finds the run (stop_at_once)
        self._owner = os.getpid()  # the process that stops so; a child forked meanwhile does not
        main = threading.current_thread() is threading.main_thread()
        # what restore() puts back: the handlers before the run, never one a Trainer installed since
        self._original: dict[int, Any] = {s: signal.getsignal(s) for s in SIGNALS} if main else {}
        self._chained: dict[int, Any] = {}  # what was there when we took over (called for SIGUSR1)

    def stop_at_once(self) -> None:
        """Until `install()`: a signal raises Preempted where it finds the run (extracting features,
        waiting for a GPU). There is nothing to checkpoint yet, and the default action would kill
        the process with metrics.json still saying `running`."""
        self.install()
        self._at_once = True
        self._owner = os.getpid()

    def release(self, signals: tuple[int, ...]) -> None:
        """Put back the handlers the run began with for `signals`: as a fit starts, Lightning installs
        its SLURM requeue on SIGUSR1 only where no handler is (`install()` then chains it)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in signals:
            handler = self._original.get(signum)
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def install(self, signals: tuple[int, ...] = SIGNALS) -> None:
        self._at_once = False
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only
        for signum in signals:
            current = signal.getsignal(signum)
            if current != self._handle:  # == : each access to a bound method makes a new object
                self._chained[signum] = current
                signal.signal(signum, self._handle)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._original.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._chained.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._at_once and os.getpid() != self._owner:
            _as_by_default(signum)  # a child forked meanwhile (a loader worker): the parent decides
            return
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C: the user does not want to wait
        if self.received is None:
            log.warning("received %s: %s", signal.Signals(signum).name, "stopping now, before training" if
                        self._at_once else "stopping at the end of this batch (in training, after saving a "
                        "checkpoint)")
        self.received = signum
        if self._at_once:
            raise Preempted(signum)
        chained = self._chained.get(signum)
        if signum == signal.SIGUSR1 and callable(chained):
            chained(signum, frame)  # Lightning's SLURM auto-requeue, where it is configured


def _as_by_default(signum: int) -> None:
    """What the signal does without a handler: SIGINT raises KeyboardInterrupt (which PyTorch's
    loader workers wait out), the others end the process."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def agreed_signal(trainer: pl.Trainer, signum: int) -> int:
    """`signum` (0: none), the same on every DDP rank: the largest any rank received (one
    all-reduce; none on one device)."""
    if trainer.world_size == 1:
        return signum
    agreed = trainer.strategy.reduce(torch.tensor(float(signum), device=trainer.strategy.root_device),
                                     reduce_op="max")
    return int(agreed)

