"""What a checkpoint needs beyond weights and optimizer to resume exactly: the global RNG states,
and the train loader's position applied even where Lightning built the loader before restoring it.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from captioner.training.lightning_seams import reload_pending_loader_state


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
    """The global RNG states (torch, CUDA, numpy, random) in every checkpoint, restored on resume."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "python": random.getstate(),
                 # numpy's state as tensors and numbers: checkpoints load with weights_only=True
                 "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss)}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        torch.set_rng_state(state["torch"])
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
