"""What a checkpoint needs beyond weights and optimizer to resume exactly: the global RNG states,
and the train loader's position applied even where Lightning built the loader before restoring it.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from captioner.training.lightning_seams import reload_pending_loader_state

log = logging.getLogger(__name__)


class RestoreTrainingOrder(Callback):
    """Applies the saved position when Lightning set up the train loader before restoring its state.

    `trainer.estimated_stepping_batches` (the cosine learning-rate schedule asks for it in
    `configure_optimizers`) builds the train loader and fetches its first batch before the
    checkpoint's loop state is restored; Lightning then keeps that loader and never loads the
    saved position into it. Here, once training starts, the position is loaded and the fetcher
    starts again from it.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        reload_pending_loader_state(trainer)


class RandomState(Callback):
    """The global RNG states (torch, CUDA, numpy, random) in every checkpoint, restored on resume.

    Under DDP each rank's own: ranks draw differently (dropout over batches of other lengths, SCST's
    samples), and rank 0's states restored on every rank made a resumed run drift from an
    uninterrupted one. Saving gathers them (Lightning saves on every rank, rank 0 writes); a resume
    on another number of ranks takes rank 0's, as before.
    """

    def __init__(self) -> None:
        self._world = 1  # the Trainer's ranks (not whatever process group exists outside it)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._world = trainer.world_size

    def _ranks(self) -> int:
        """The Trainer's ranks where they are the process group's, else 1."""
        return self._world if _world_size() == self._world else 1

    def state_dict(self) -> dict[str, Any]:
        state = _own_states()
        world = self._ranks()
        if world > 1:
            ranks: list[Any] = [None] * world
            torch.distributed.all_gather_object(ranks, state)
            state = {**ranks[0], "ranks": ranks}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        ranks = state.get("ranks")
        world = self._ranks()
        if ranks is not None and len(ranks) == world:
            state = ranks[torch.distributed.get_rank() if world > 1 else 0]
        elif ranks is not None or world > 1:
            log.warning("the checkpoint's random states are of %d rank(s), this run has %d: every rank "
                        "takes rank 0's (the resume is not bit-exact)", len(ranks or [None]), world)
        _restore_own_states(state)


def _world_size() -> int:
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_world_size() if distributed else 1


def _own_states() -> dict[str, Any]:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             # numpy's state as tensors and numbers: checkpoints load with weights_only=True
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_own_states(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
