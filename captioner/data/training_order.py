"""The order of training batches as part of a checkpoint, so a run resumes at the batch it stopped.

`EpochShuffle` draws each epoch's permutation from (seed, epoch) alone, so the order needs no
saved generator; `ResumableDataLoader` gives Lightning the `state_dict`/`load_state_dict` it
stores in every checkpoint for stateful loaders (`loops.fit_loop.state_dict.combined_loader`):
the epoch and how many batches of it were trained. A resumed run skips those batches without
reading them (captioner/training/resumable_state.py restores the rest: RNGs, the loader's position).
Under DDP each rank takes its share of the same permutation, and the sampler is a
DistributedSampler, so Lightning keeps it rather than wrapping it in its own (whose position no
checkpoint records: a mid-epoch resume then trained the epoch's first batches twice and never
its last ones).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler


class EpochShuffle(DistributedSampler):
    """A random permutation of `range(size)` per epoch, a function of (seed, epoch) only; of it,
    rank `rank` of `replicas` takes every replicas-th item (the permutation wrapped round to a
    multiple of `replicas`, as DistributedSampler pads, so every rank has as many batches)."""

    def __init__(self, size: int, seed: int = 0, rank: int = 0, replicas: int = 1) -> None:
        super().__init__(range(size), num_replicas=replicas, rank=rank, shuffle=True, seed=seed)
        self.size = size
        self.start = 0  # items of this rank's share to skip on the next pass (a resume)

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it at every epoch start
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        """This rank's share of the epoch's permutation (with one replica: all of it)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        if self.num_replicas > 1:
            order = order.repeat(-(-self.total_size // max(self.size, 1)))[:self.total_size]
            order = order[self.rank::self.num_replicas]
        return order

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        yield from self.order()[start:].tolist()

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """A DataLoader over an `EpochShuffle` whose position is saved in checkpoints.

    `batches_done()` says how many batches of the current epoch training has finished; the loader
    itself cannot know (Lightning fetches ahead, workers prefetch). `epoch_batches()`, where given,
    says how many the epoch has when fewer than the loader's (`trainer.limit_train_batches`).
    """

    def __init__(self, *args: Any, batches_done: Callable[[], int] | None = None,
                 epoch_batches: Callable[[], float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_done, self.epoch_batches = batches_done, epoch_batches

    def _shuffle(self) -> EpochShuffle | None:
        return self.sampler if isinstance(self.sampler, EpochShuffle) else None

    def state_dict(self) -> dict[str, Any]:
        shuffle = self._shuffle()
        if shuffle is None or self.batches_done is None:
            return {}
        done = int(self.batches_done())
        if done >= min(len(self), self.epoch_batches() if self.epoch_batches else len(self)):
            # the epoch is over: the next pass is the next epoch's first batch
            return {"epoch": shuffle.epoch + 1, "batches_done": 0}
        return {"epoch": shuffle.epoch, "batches_done": done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shuffle = self._shuffle()
        if shuffle is None or "epoch" not in state:
            return
        shuffle.set_epoch(int(state["epoch"]))
        shuffle.start = int(state["batches_done"]) * int(self.batch_size or 1)
