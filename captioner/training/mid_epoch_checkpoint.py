"""Checkpoints in the middle of an epoch: every `every_minutes` of training, and on preemption.

Both write `checkpoints/last.ckpt` (what `ckpt_path=last` resumes from) at the end of a training
batch, with the training order's position and the RNG states (training_order.py), so a resume
continues at the next batch and a kill -9 loses at most `every_minutes`.

Under DDP every rank must save (rank 0 writes) and stop at the same batch, so the ranks agree by an
all-reduce, which waits for the GPU: once every ~`AGREE_EVERY_S` of training rather than every
batch (issue #25: no host sync per step), and at an epoch's last batch. A signal then stops the
run within about that long.

A signal at an epoch's last batch waits for that epoch's validation and its epoch-end checkpoint:
a checkpoint written at the last batch counts the epoch as done, and the resume would skip its
validation, and with it that epoch's best checkpoint, early stopping's and the plateau's step. The
run then stops before the next epoch; so does one that got a signal during a validation, before
training another batch, or, after the last epoch, before any test.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping

from captioner.training.preemption import Preempted, PreemptionSignals, agreed_signal

log = logging.getLogger(__name__)

AGREE_EVERY_S = 1.0  # how often DDP ranks agree on saving or stopping, in seconds of training
MOST_BATCHES_BETWEEN = 1000


def batches_until_next_agreement(seconds_per_batch: float | None, every_s: float = AGREE_EVERY_S) -> int:
    """Batches one rank proposes to train before the ranks next agree: about `every_s` of training
    (1 while its pace is unknown, at most MOST_BATCHES_BETWEEN)."""
    if not seconds_per_batch or seconds_per_batch <= 0:
        return 1
    return max(1, min(MOST_BATCHES_BETWEEN, int(every_s / seconds_per_batch)))


def stopped_early(trainer: pl.Trainer) -> bool:
    """Whether early stopping has ended the fit (not `max_time`'s Timer, which a resume with more
    time must go on from)."""
    return trainer.should_stop and any(isinstance(c, EarlyStopping) and (
        c.stopped_epoch > 0 or c.wait_count >= c.patience) for c in trainer.callbacks)  # (in epoch 0 too)


def _validates_at_epoch_end(trainer: pl.Trainer) -> bool:
    """Whether validation, and the checkpoint after it, follow this epoch's last batch."""
    every = trainer.check_val_every_n_epoch
    return trainer.enable_validation and every is not None and (trainer.current_epoch + 1) % every == 0


class MidEpochCheckpoint(Callback):
    def __init__(self, path: Path, every_minutes: float | None, signals: PreemptionSignals | None = None):
        self.path = Path(path)
        self.every_s = None if not every_minutes else float(every_minutes) * 60
        self.signals = signals
        self._last_save = time.monotonic()
        self._next_agreement = 0  # DDP: the batch (of this epoch) at which the ranks next agree
        self._agreed_at: tuple[int, float] | None = None  # (batch, time) of the last agreement
        self._stop_after_epoch = 0  # a signal at the last batch: stop once the epoch's checkpoint is written
        # a signal mid-epoch: the checkpoint is written at the batch's end, the stop comes before the
        # next batch, once Lightning has logged the batch (a stop at once lost its row in the logs)
        self._stop_before_next_batch = 0
        # Early stopping ended the fit: kept in every checkpoint written after that (the epoch's
        # last.ckpt, one written as a signal stopped the run), so that a resume from it ends its fit
        # at once too (Lightning does not save `should_stop`; the resume trained another epoch).
        self._fit_ended = False
        self._fitting: pl.Trainer | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._fitting = trainer  # state_dict() is asked without it
        if stage == "fit" and self.signals is not None:  # before the fit registers its handlers
            self.signals.release((signal.SIGUSR1,))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._next_agreement, self._agreed_at = 0, None  # batch indices start again (or mid-epoch, resumed)
        self._stop_on_signal(trainer, pl_module)  # one that came at the last batch or in validation

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.monotonic()
        self._stop_after_epoch = self._stop_before_next_batch = 0
        if self._fit_ended:  # resumed from the checkpoint such a stop wrote
            trainer.should_stop, self._fit_ended = True, False
        if self.signals is not None:
            self.signals.install()  # after Lightning's own SIGTERM handler: ours decides

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_on_signal(trainer, pl_module, ending=True)  # after the last checkpoint, before any test

    def _received(self) -> int:
        """The signal this process received (0: none)."""
        return (self.signals.received if self.signals is not None else None) or 0

    def state_dict(self) -> dict[str, Any]:
        # (`_fit_ended`, read from a checkpoint, has become should_stop by the time any is written)
        return {"fit_ended": self._fitting is not None and stopped_early(self._fitting)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._fit_ended = bool(state_dict.get("fit_ended", False))

    def _stop_on_signal(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                        ending: bool = False) -> None:
        """Between epochs: stop on a signal that came at the last batch or during validation, with
        the epoch-end checkpoint to resume from. Under DDP every rank stops (one agreement)."""
        signum = agreed_signal(trainer, self._stop_after_epoch or self._received())
        if not signum:
            return
        if ending and trainer.should_stop:  # early stopping ended the fit (every rank alike)
            trainer.save_checkpoint(self.path)  # records that (state_dict)
        raise Preempted(signum, str(self.path) if self.path.is_file() else None)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.monotonic()  # ModelCheckpoint writes last.ckpt after validation

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        last = batch_idx + 1 == trainer.num_training_batches
        due = self.every_s is not None and time.monotonic() - self._last_save >= self.every_s
        due = due and not last  # the epoch's last batch is followed by validation and ModelCheckpoint's save
        signum = self._received()
        if trainer.world_size > 1:  # every rank saves (rank 0 writes) and stops together
            # and at the last batch: whether to save now or stop after the epoch is decided alike
            if batch_idx < self._next_agreement and not last:
                return
            due, signum = self._agree(trainer, pl_module, batch_idx, due, signum)
        if not (due or signum):
            return
        if signum and last and _validates_at_epoch_end(trainer):
            self._stop_after_epoch = signum  # after the validation and the epoch's own checkpoint
            log.warning("stopping after this epoch's validation and its checkpoint")
            return
        trainer.save_checkpoint(self.path)
        self._last_save = time.monotonic()
        if signum:
            log.warning("saved %s at epoch %d, batch %d", self.path, trainer.current_epoch, batch_idx + 1)
            self._stop_before_next_batch = signum  # (a fit with no next batch stops as it ends)
            return
        log.info("mid-epoch checkpoint %s (epoch %d, batch %d)", self.path, trainer.current_epoch,
                 batch_idx + 1)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._stop_before_next_batch:
            raise Preempted(self._stop_before_next_batch, str(self.path))

    def _agree(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch_idx: int, due: bool,
               signum: int) -> tuple[bool, int]:
        """Whether any rank is due to save or got a signal; and, the same on every rank, when to ask
        again: the smallest interval any rank proposes (max of the negated proposals)."""
        now = time.monotonic()
        pace = None
        if self._agreed_at is not None and batch_idx > self._agreed_at[0]:
            pace = (now - self._agreed_at[1]) / (batch_idx - self._agreed_at[0])
        proposal = batches_until_next_agreement(pace)
        decision = trainer.strategy.reduce(
            torch.tensor([float(due), float(signum), -float(proposal)], device=pl_module.device),
            reduce_op="max")
        decision = decision.tolist()  # the one host read: a sync, once per agreement
        self._agreed_at = (batch_idx, now)
        self._next_agreement = batch_idx + int(-decision[2])
        return bool(decision[0]), int(decision[1])

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # SIGTERM reaches Lightning's own handler too, which stops the test on every rank; SIGINT
        # only ours (one process: under DDP the run stops after the test instead).
        received = self._received()
        if received and trainer.world_size == 1:
            raise Preempted(received, str(self.path) if self.path.is_file() else None)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning has just put back the handlers it found when the fit began: the signals are
        # ours again for the test and the outputs (the next fit's setup hands SIGUSR1 back for its
        # SLURM requeue, which its on_train_start chains); the run restores them at its end.
        if self.signals is not None and stage == "fit":
            self.signals.install()
