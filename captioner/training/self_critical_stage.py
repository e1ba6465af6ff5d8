"""The self-critical stage of a run: a second fit after cross-entropy (or from an XE checkpoint).

`captioner.runs.run.run` fits with cross-entropy first (unless `scst.from_checkpoint` names the XE weights
or it resumes an SCST checkpoint), then `fit_self_critical` starts a second Trainer whose
training batches are images (each sampled `scst.samples` times) and whose training step is
`SelfCritical`'s (self_critical.py). It shares the run's callbacks, so the best checkpoint (by val
CIDEr-D) is the best of both stages, and the run's validation history goes on with stage "scst".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from captioner.data.datamodule import CaptionDataModule
from captioner.settings import ScstSettings
from captioner.training.checkpoint_loading import CheckpointError, CheckpointNotFoundError
from captioner.training.checkpoint_record import CheckpointRecord
from captioner.training.lightning_seams import (
    batches_that_stepped,
    forget_last_saved_step,
    set_batches_that_stepped,
)
from captioner.training.module import CaptionModule
from captioner.training.self_critical import CiderReward, SelfCritical
from captioner.training.validation_history import ValidationHistory


class ImageTrainData(pl.LightningDataModule):
    """The run's data with train batches of images (features, image_index) instead of captions."""

    def __init__(self, data: CaptionDataModule, batch_size: int):
        super().__init__()
        self.data = data
        self.batch_size = batch_size

    def setup(self, stage: str | None = None) -> None:
        self.data.setup(stage)

    def train_dataloader(self) -> DataLoader:
        # Resumable like cross-entropy's: its position is this stage's Trainer's count.
        return self.data.train_image_dataloader(self.batch_size, self.trainer)

    def val_dataloader(self) -> DataLoader:
        return self.data.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.data.test_dataloader()

    # What CaptionModule asks of `trainer.datamodule` at validation and test.
    def references(self, split: str) -> dict[int, list[str]]:
        return self.data.references(split)

    def eval_split(self, stage: str) -> str:
        return self.data.eval_split(stage)


def skips_cross_entropy(scst: ScstSettings, resume: CheckpointRecord | None) -> bool:
    """True when the run goes straight to the self-critical stage."""
    resumes_scst = resume is not None and resume.stage == "scst"
    return scst.enabled and (scst.from_checkpoint is not None or resumes_scst)


def _load_weights(module: CaptionModule, path: Path, option: str) -> None:
    fix = "give a cross-entropy .ckpt of this model (a run's checkpoints/ folder), or null to train it first"
    if not path.is_file():
        raise CheckpointNotFoundError(f"{option}: no such checkpoint file ({path}); {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = (state.get("hyper_parameters") or {}).get("vocabulary")
        difference = module.vocabulary.difference(saved) if saved is not None else None
        if difference is None:
            module.load_state_dict(state["state_dict"])
    except Exception as error:  # not a torch file (UnpicklingError, ...), no state_dict, other sizes
        raise CheckpointError(f"{option}={path}: not a checkpoint of this model (its vocabulary and sizes "
                              f"must match this run's config; {fix}): {type(error).__name__}: "
                              f"{str(error)[:300]}") from error
    if difference is not None:  # the same count of other words would load without a complaint
        raise CheckpointError(f"{option}={path}: its model was trained with another vocabulary "
                              f"({difference}): another dataset, train split or text.* settings; {fix}")


def fit_self_critical(scst: ScstSettings, module: CaptionModule, datamodule: CaptionDataModule,
                      make_trainer: Callable[..., pl.Trainer], resume: CheckpointRecord | None,
                      cross_entropy: pl.Trainer) -> pl.Trainer:
    """Fit with the self-critical loss; returns the stage's Trainer (to test with).

    Starts from: the SCST checkpoint `resume` (a resumed run, optimizer and epoch included),
    else the weights of `scst.from_checkpoint`, else the best checkpoint of the `cross_entropy`
    Trainer's fit (this run's first stage).
    """
    resumed = resume.path if resume is not None and resume.stage == "scst" else None
    if resumed is None:
        best_xe = getattr(cross_entropy.checkpoint_callback, "best_model_path", "")
        if scst.from_checkpoint:
            _load_weights(module, Path(scst.from_checkpoint), "scst.from_checkpoint")
        elif best_xe:
            _load_weights(module, Path(best_xe), "the best cross-entropy checkpoint")
    datamodule.setup()
    module.self_critical = SelfCritical(
        CiderReward(datamodule.references("train"), datamodule.vocabulary), lr=scst.lr,
        samples=scst.samples, baseline=scst.baseline, temperature=scst.temperature)
    # scst.epochs is this stage's length: the trainer.* limits on the cross-entropy fit's steps and
    # epochs (max_steps, min_steps, min_epochs) are not this stage's; the wall-clock max_time is the run's.
    trainer = make_trainer(max_epochs=scst.epochs, max_steps=-1, min_steps=None, min_epochs=None)
    if resumed is None:  # the loggers' step goes on from the cross-entropy stage's (a resume restores it)
        set_batches_that_stepped(trainer, batches_that_stepped(cross_entropy))
    for callback in trainer.callbacks:
        if isinstance(callback, ValidationHistory):
            callback.stage = "scst"
        if isinstance(callback, pl.callbacks.ModelCheckpoint):  # epochs and steps count from 0 again
            if callback.monitor is not None:  # best-*.ckpt; last.ckpt keeps its name
                callback.filename = "scst-" + str(callback.filename)
            forget_last_saved_step(callback)  # else a step number XE saved at is skipped
    trainer.fit(module, datamodule=ImageTrainData(datamodule, scst.batch_size), ckpt_path=resumed,
                weights_only=True)
    return trainer


def stage_summary(history: list[dict[str, Any]]) -> dict[str, int]:
    """Validated epochs per stage, for metrics.json."""
    counts: dict[str, int] = {}
    for entry in history:
        counts[entry.get("stage", "xe")] = counts.get(entry.get("stage", "xe"), 0) + 1
    return counts
