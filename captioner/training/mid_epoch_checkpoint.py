"""Checkpoints in the middle of an epoch: every `every_minutes` of training, and on preemption.

Both write `checkpoints/last.ckpt` (what `ckpt_path=last` resumes from) at the end of a training
batch, with the training order's position and the RNG states (training_order.py), so a resume
continues at the next batch and a kill -9 loses at most `every_minutes`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from captioner.training.preemption import Preempted, PreemptionSignals

log = logging.getLogger(__name__)


class MidEpochCheckpoint(Callback):
    def __init__(self, path: Path, every_minutes: float | None, signals: PreemptionSignals | None = None):
        self.path = Path(path)
        self.every_s = None if not every_minutes else float(every_minutes) * 60
        self.signals = signals
        self._last_save = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.monotonic()
        if self.signals is not None:
            self.signals.install()  # after Lightning's own SIGTERM handler: ours decides

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.monotonic()  # ModelCheckpoint writes last.ckpt after validation

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        due = self.every_s is not None and time.monotonic() - self._last_save >= self.every_s
        # the epoch's last batch is followed by validation and ModelCheckpoint's own save
        due = due and batch_idx + 1 < trainer.num_training_batches
        signum = (self.signals.received if self.signals is not None else None) or 0
        if trainer.world_size > 1:  # every rank saves (rank 0 writes) and stops together
            decision = trainer.strategy.reduce(torch.tensor([float(due), float(signum)],
                                                            device=pl_module.device), reduce_op="max")
            due, signum = bool(decision[0]), int(decision[1])
        if not (due or signum):
            return
        trainer.save_checkpoint(self.path)
        self._last_save = time.monotonic()
        if signum:
            log.warning("saved %s at epoch %d, batch %d", self.path, trainer.current_epoch, batch_idx + 1)
            raise Preempted(signum, str(self.path))
        log.info("mid-epoch checkpoint %s (epoch %d, batch %d)", self.path, trainer.current_epoch,
                 batch_idx + 1)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.signals is not None and stage == "fit":
            self.signals.restore()
