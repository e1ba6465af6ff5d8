"""Checkpoint files written atomically: a kill mid-save, or a crash, leaves the previous file intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_fabric.plugins import TorchCheckpointIO

from captioner.paths import replace_durably


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.partial")
        super().save_checkpoint(checkpoint, staging, storage_options)
        replace_durably(staging, path)
