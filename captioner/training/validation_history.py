"""Validation scores per epoch, kept for metrics.json (the report's learning curves)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class ValidationHistory(Callback):
    """After each validation epoch, the `val/*` scores with the epoch they belong to.

    Kept in checkpoints, so a resumed run's curve starts at its first epoch, not at the resume.
    Each entry names its `stage` ("xe", or "scst" for the self-critical stage, whose epochs go on
    counting after the cross-entropy ones).
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.stage = "xe"

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run before the
        # module's, where the scores are computed (ModelCheckpoint reads them here too).
        if trainer.sanity_checking:
            return
        scores = {name.removeprefix("val/"): float(value)
                  for name, value in trainer.callback_metrics.items() if name.startswith("val/")}
        if scores:
            earlier = [e["epoch"] for e in self.epochs if e.get("stage", "xe") != self.stage]
            epoch = trainer.current_epoch + (max(earlier) + 1 if earlier and self.stage == "scst" else 0)
            self.epochs = [e for e in self.epochs if e["epoch"] != epoch]
            self.epochs.append({"epoch": epoch, "stage": self.stage, **scores})

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict.get("epochs", []))
