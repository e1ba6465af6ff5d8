"""What a checkpoint says about itself, read once: its stage, step, model settings and CNN.

A resume asks several questions of the file it goes on from (can it be read? may this config go
on from it? which stage wrote it?); they are answered from one read, and the weights are left to
Lightning's own load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from captioner.training.checkpoint_loading import CheckpointError
from captioner.training.lightning_seams import resumed_logger_step

STAGES = ("xe", "scst")  # cross-entropy, self-critical


class CheckpointDamagedError(CheckpointError):
    """The file cannot be loaded: cut short (a full disk, a kill mid-copy) or corrupt."""


@dataclass(frozen=True)
class CheckpointRecord:
    path: Path
    stage: str  # which training stage wrote it: xe or scst
    global_step: int  # optimizer steps of the Trainer that saved it (each stage counts from 0)
    logger_step: int  # the step its loggers had reached: a resume's logs go on from here
    hyper_parameters: Mapping[str, Any]  # CaptionModule's: vocabulary, sizes, recipe, CNN record

    @property
    def cnn(self) -> Mapping[str, Any]:
        """The record of the CNN that made the training features (FeatureFile.cnn_record)."""
        return self.hyper_parameters.get("cnn") or {}


def read_checkpoint_record(path: Path) -> CheckpointRecord:
    """The record of the checkpoint at `path`; CheckpointDamagedError when it cannot be loaded."""
    path = Path(path)
    try:  # weights_only: never executes pickled code from the file
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated zip, a bad CRC, unpicklable data, ...
        message = " ".join(str(error).split())[:200]
        raise CheckpointDamagedError(f"{type(error).__name__}: {message}") from error
    if not isinstance(state, dict):
        raise CheckpointDamagedError(f"holds a {type(state).__name__}, not a Lightning checkpoint")
    global_step = int(state.get("global_step", 0))
    logger_step = resumed_logger_step(state)
    return CheckpointRecord(path=path, stage=state.get("training_stage", "xe"), global_step=global_step,
                            logger_step=global_step if logger_step is None else logger_step,
                            hyper_parameters=dict(state.get("hyper_parameters") or {}))
