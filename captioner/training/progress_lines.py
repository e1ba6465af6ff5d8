"""Plain progress lines for logs: one per epoch always, and a few within an epoch without a terminal.

A piped, `nohup` or cluster run has no progress bar; these lines (through logging, so Hydra puts
them on the console and in the run's train.log) show that it lives and when it will end:
`epoch 3/15  train loss 2.314  val BLEU-4 0.412  CIDEr-D 1.234  lr 0.001  63s  ETA 12m40s`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

log = logging.getLogger("captioner.progress")


def duration(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _of(trainer: pl.Trainer) -> str:
    return f"/{trainer.max_epochs}" if (trainer.max_epochs or -1) > 0 else ""


class ProgressLines(Callback):
    """`within_epoch_every_s`: a line within an epoch at most this often (None: epoch lines only)."""

    def __init__(self, within_epoch_every_s: float | None = None) -> None:
        self.every_s = within_epoch_every_s
        self._epoch_times: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.on_train_epoch_start(trainer, pl_module)  # a resume mid-epoch has no epoch start

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_began = self._last_line = time.monotonic()
        self._loss_sum = torch.zeros((), device=pl_module.device)
        self._batches = 0
        self._validated = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._loss_sum = self._loss_sum + loss.detach()  # no host sync per batch
            self._batches += 1
        now = time.monotonic()
        if self.every_s is None or now - self._last_line < self.every_s or not trainer.is_global_zero:
            return
        self._last_line = now
        total = trainer.num_training_batches
        done = batch_idx + 1
        rate = done / max(now - self._epoch_began, 1e-9)
        left = f"  epoch ETA {duration((total - done) / rate)}" if total != float("inf") else ""
        log.info("epoch %d%s  batch %d/%s  train loss %.3f  %.1f batch/s%s", trainer.current_epoch + 1,
                 _of(trainer), done, total, self._mean_loss(), rate, left)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not hasattr(self, "_epoch_began"):
            return
        took = time.monotonic() - self._epoch_began
        self._epoch_times.append(took)
        if not trainer.is_global_zero:
            return
        parts = [f"epoch {trainer.current_epoch + 1}{_of(trainer)}",
                 f"train loss {self._mean_loss():.3f}"]
        metrics = trainer.callback_metrics
        if self._validated and "val/cider" in metrics:
            parts.append(f"val BLEU-4 {float(metrics['val/bleu4']):.3f}  "
                         f"CIDEr-D {float(metrics['val/cider']):.3f}")
        if trainer.optimizers:  # the lr this epoch ran at (plateau and other epoch-wise schedules step later)
            parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.3g}")
        parts.append(duration(took))
        if _of(trainer):
            remaining = max(trainer.max_epochs - trainer.current_epoch - 1, 0)
            mean = sum(self._epoch_times) / len(self._epoch_times)
            parts.append(f"ETA {duration(mean * remaining)}")
        log.info("  ".join(parts))

    def _mean_loss(self) -> float:
        return float(self._loss_sum) / self._batches if self._batches else float("nan")
