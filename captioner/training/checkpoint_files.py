"""Checkpoint files written atomically: a kill mid-save, or a crash, leaves the previous file intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_fabric.plugins import TorchCheckpointIO

from captioner.paths import replace_durably, staged


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        """Save through this writer's own staging file (paths.staged): two saves of one file at once
        (a requeued job beside the old one) never write into one staging file or rename each
        other's; a failed save leaves the previous file and no staging file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with staged(path) as staging:
            super().save_checkpoint(checkpoint, staging, storage_options)
            replace_durably(staging, path)
