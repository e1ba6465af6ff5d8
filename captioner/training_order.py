"""The order of training batches as part of a checkpoint, so a run resumes at the batch it stopped.

`EpochShuffle` draws each epoch's permutation from (seed, epoch) alone, so the order needs no
saved generator; `ResumableDataLoader` gives Lightning the `state_dict`/`load_state_dict` it
stores in every checkpoint for stateful loaders (`loops.fit_loop.state_dict.combined_loader`):
the epoch and how many batches of it were trained. A resumed run skips those batches without
reading them, and `RandomState` restores the global RNGs (dropout) of the moment of the save.
Under DDP Lightning swaps the sampler for its DistributedSampler: a mid-epoch resume then keeps
the batch count but not the exact order (documented in the README).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, Sampler


class EpochShuffle(Sampler[int]):
    """A random permutation of `range(size)` per epoch, a function of (seed, epoch) only."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0
        self.start = 0  # items of this epoch's permutation to skip on the next pass (a resume)

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it at every epoch start
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        yield from self.order()[start:].tolist()

    def __len__(self) -> int:
        return self.size


class ResumableDataLoader(DataLoader):
    """A DataLoader over an `EpochShuffle` whose position is saved in checkpoints.

    `batches_done()` says how many batches of the current epoch training has finished; the loader
    itself cannot know (Lightning fetches ahead, workers prefetch).
    """

    def __init__(self, *args: Any, batches_done: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done

    def _shuffle(self) -> EpochShuffle | None:
        return self.sampler if isinstance(self.sampler, EpochShuffle) else None

    def state_dict(self) -> dict[str, Any]:
        shuffle = self._shuffle()
        if shuffle is None or self.batches_done is None:
            return {}
        done = int(self.batches_done())
        if done >= len(self):  # the epoch is over: the next pass is the next epoch's first batch
            return {"epoch": shuffle.epoch + 1, "batches_done": 0}
        return {"epoch": shuffle.epoch, "batches_done": done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shuffle = self._shuffle()
        if shuffle is None or "epoch" not in state:
            return
        shuffle.set_epoch(int(state["epoch"]))
        shuffle.start = int(state["batches_done"]) * int(self.batch_size or 1)


class RestoreTrainingOrder(Callback):
    """Applies the saved position when Lightning set up the train loader before restoring its state.

    `trainer.estimated_stepping_batches` (the cosine learning-rate schedule asks for it in
    `configure_optimizers`) builds the train loader and fetches its first batch before the
    checkpoint's loop state is restored; Lightning then keeps that loader and never loads the
    saved position into it. Here, once training starts, the position is loaded and the fetcher
    starts again from it.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fit_loop = trainer.fit_loop
        pending = fit_loop._combined_loader_states_to_load
        if pending and fit_loop._combined_loader is not None and fit_loop._data_fetcher is not None:
            fit_loop._combined_loader._load_state_dicts(pending)
            fit_loop._combined_loader_states_to_load = []
            iter(fit_loop._data_fetcher)  # fetches again, from the restored position


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
