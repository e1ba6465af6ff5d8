"""A trained model back from its checkpoint file, without executing pickled code."""

from __future__ import annotations

import pickle
from pathlib import Path

from torch import nn

from captioner.errors import UserError
from captioner.training.module import CaptionModule


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be loaded or does not fit the features it is asked to caption."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file named (or `ckpt_path=last`) is not there."""


def load_module(checkpoint: Path, top: nn.Module | None = None) -> CaptionModule:
    """The model in `checkpoint`, loaded without executing pickled code (`weights_only=True`).
    `top`: the architecture of its trainable CNN top, if it has one (its weights come from the file)."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        raise CheckpointNotFoundError(f"{checkpoint} is a folder; pass the path of a .ckpt file in it")
    if not checkpoint.is_file():
        raise CheckpointNotFoundError(f"{checkpoint}: no such checkpoint file; pass the path of a .ckpt "
                                      "file from a run's checkpoints/ folder")
    try:
        return CaptionModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True,
                                                  **({"top": top} if top is not None else {}))
    except pickle.UnpicklingError as error:
        # Not torch's text: it suggests weights_only=False, which would run the file's code.
        raise CheckpointError(f"{checkpoint}: not a captioner checkpoint: it holds objects other than "
                              "tensors and plain data, which are not loaded (no code from a checkpoint "
                              "is run); a checkpoint of this project holds only those") from error
    except Exception as error:  # torch raises RuntimeError, KeyError, ... for other files
        raise CheckpointError(f"{checkpoint}: not a captioner checkpoint "
                              f"({type(error).__name__}: {str(error)[:300]})") from error
