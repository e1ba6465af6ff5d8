"""Checkpoint files: written atomically (a kill mid-save leaves the previous file intact) and read
back without executing pickled code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning_fabric.plugins import TorchCheckpointIO

from captioner.errors import UserError
from captioner.module import CaptionModule


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.partial")
        super().save_checkpoint(checkpoint, staging, storage_options)
        os.replace(staging, path)


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be loaded or does not fit the features it is asked to caption."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file named (or `ckpt_path=last`) is not there."""


def load_module(checkpoint: Path) -> CaptionModule:
    """The model in `checkpoint`, loaded without executing pickled code (`weights_only=True`)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointNotFoundError(f"{checkpoint}: no such checkpoint file; pass the path of a .ckpt "
                                      "file from a run's checkpoints/ folder")
    try:
        return CaptionModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, KeyError, ...
        raise CheckpointError(f"{checkpoint}: not a captioner checkpoint "
                              f"({type(error).__name__}: {str(error)[:300]})") from error
