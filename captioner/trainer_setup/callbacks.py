"""The Lightning callbacks of a run, chosen from its config: checkpoints (best by val CIDEr-D, and
last after every validation or mid-epoch), exact resume, progress, lr logging, early stopping."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from pytorch_lightning.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)

from captioner.records.run_folder import RunFolder
from captioner.settings import RunSettings
from captioner.trainer_setup.progress_bar import ProgressBar
from captioner.trainer_setup.resumable_checkpoint import ResumableCheckpoint
from captioner.training.mid_epoch_checkpoint import MidEpochCheckpoint
from captioner.training.preemption import PreemptionSignals
from captioner.training.progress_lines import ProgressLines
from captioner.training.resumable_state import RandomState, RestoreTrainingOrder
from captioner.training.validation_history import ValidationHistory


@dataclass
class RunCallbacks:
    best: ModelCheckpoint
    history: ValidationHistory
    early_stopping: EarlyStopping | None
    all: list[Callback] = field(default_factory=list)

    def end_cross_entropy(self) -> None:
        """Cross-entropy's early stopping ends with its stage: its patience and its best score are
        not the self-critical stage's."""
        if self.early_stopping in self.all:
            self.all.remove(self.early_stopping)

    def start_self_critical(self, patience: int | None) -> None:
        """The self-critical stage's own early stopping on dev CIDEr-D (`scst.patience`)."""
        self.end_cross_entropy()
        if patience:
            self.early_stopping = EarlyStopping("val/cider", mode="max", patience=patience)
            self.all.append(self.early_stopping)


def run_callbacks(settings: RunSettings, folder: RunFolder, signals: PreemptionSignals,
                  with_loggers: bool) -> RunCallbacks:
    terminal = sys.stdout.isatty()
    best = ResumableCheckpoint(dirpath=folder.checkpoints, filename="best-epoch{epoch:02d}",
                               monitor="val/cider", mode="max", auto_insert_metric_name=False)
    # Lightning 2.6's save_last writes last.ckpt only at epochs that improved the monitored
    # score, so a resume would repeat every epoch since the best: a second, unmonitored
    # callback rewrites last.ckpt after every validation (listed after `best`, so the best
    # score it records is current).
    latest = ResumableCheckpoint(dirpath=folder.checkpoints, filename=folder.last_checkpoint.stem,
                                 monitor=None, save_top_k=1, enable_version_counter=False)
    history = ValidationHistory()
    every = settings.checkpoint_every_minutes
    callbacks: list[Callback] = [
        best, latest, history, RandomState(), RestoreTrainingOrder(),
        MidEpochCheckpoint(folder.last_checkpoint, every, signals),
        ProgressLines(None if terminal else settings.progress_every_s)]
    if settings.trainer.enable_progress_bar and terminal:
        callbacks.append(ProgressBar())
    if with_loggers:  # `lr-Adam` in every logger: where a cosine or plateau schedule has got to
        callbacks.append(LearningRateMonitor())
    patience = settings.early_stopping_patience
    stopper = EarlyStopping("val/cider", mode="max", patience=patience) if patience else None
    if stopper:
        callbacks.append(stopper)
    return RunCallbacks(best, history, stopper, callbacks)
