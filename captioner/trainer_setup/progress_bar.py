"""The terminal's progress bar, showing the training loss without a host sync every step.

A metric logged with `prog_bar=True` is turned into a Python number by Lightning after every
training batch, bar or no bar, and on a GPU that read waits for the step to finish (issue #25).
The module logs its losses for the loggers only; this bar reads them itself, at most once a second.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar

# What the bar shows beside Lightning's own items: the cross-entropy, or the self-critical reward.
SHOWN = ("train/xent", "scst/reward")


class ProgressBar(RichProgressBar):
    def __init__(self, read_every_s: float = 1.0) -> None:
        super().__init__()
        self.read_every_s = read_every_s
        self._shown: dict[str, float] = {}
        self._read_at = -math.inf

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        now = time.monotonic()
        if now - self._read_at >= self.read_every_s:
            self._read_at = now
            logged = trainer.callback_metrics
            self._shown = {name: float(logged[name]) for name in SHOWN if name in logged}
        return {**super().get_metrics(trainer, pl_module), **self._shown}
