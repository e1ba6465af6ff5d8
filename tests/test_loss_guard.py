"""The non-finite loss guard's arithmetic when it defers (as on a GPU): the first bad loss and its
step are kept on the device, and `check` raises only when one was seen."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from captioner.training.loss_guard import NonFiniteLossError, NonFiniteLossGuard
from tests.conftest import on_two_ranks


def _observe(guard: NonFiniteLossGuard, losses: list[float], every_step: bool = False) -> None:
    for step, value in enumerate(losses):
        guard.observe(torch.tensor(value), step, epoch=0, batch=step, every_step=every_step)


def test_finite_losses_pass_every_check():
    guard = NonFiniteLossGuard()
    guard.check("before anything was observed")
    _observe(guard, [3.0, 2.5, 1e30])
    guard.check("at the end of epoch 0")
    # it did watch them: a NaN after them is the first bad loss, reported with its own step
    guard.observe(torch.tensor(math.nan), 3, epoch=1, batch=0, every_step=False)
    guard.observe(torch.tensor(1.0), 4, epoch=1, batch=1, every_step=False)
    found = r"^the training loss is nan at step 3 \(found at the end of epoch 1\)"
    with pytest.raises(NonFiniteLossError, match=found):
        guard.check("at the end of epoch 1")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_deferred_the_first_bad_loss_and_its_step_are_reported_at_the_check(bad):
    guard = NonFiniteLossGuard()
    _observe(guard, [3.0, 2.0, bad, 1.0, math.nan, 4.0])  # nothing raised while observing
    with pytest.raises(NonFiniteLossError, match=rf"the training loss is {bad} at step 2 \(found at the end"):
        guard.check("at the end of epoch 0")


def test_checked_every_step_the_bad_loss_stops_at_once():
    guard = NonFiniteLossGuard()
    with pytest.raises(NonFiniteLossError, match=r"the training loss is nan at step 1 \(epoch 0, batch 1\)"):
        _observe(guard, [3.0, math.nan, 1.0], every_step=True)


def _check_on_two_ranks(rank: int, address: str, found: Any) -> None:
    """One DDP rank (gloo): finite losses everywhere pass; then an inf on rank 1 only stops both."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=2)

    def across_ranks(flag: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag

    guard = NonFiniteLossGuard()
    try:
        guard.check("before anything was observed", across_ranks)
        _observe(guard, [3.0, 2.0])
        guard.check("at the end of epoch 0", across_ranks)
        _observe(guard, [3.0, 2.0, math.inf, 1.0, math.nan] if rank == 1 else [3.0, 2.0, 1.0, 1.0, 1.0])
        guard.check("before writing a checkpoint", across_ranks)
        found.put((rank, None))
    except NonFiniteLossError as error:
        found.put((rank, str(error)))
    finally:
        dist.destroy_process_group()


def test_under_ddp_one_ranks_bad_loss_stops_every_rank_at_the_same_check():
    # Rank 0 saw only finite losses; alone it would have written weights the gradients' all-reduce
    # had already made NaN, or waited for rank 1 in the next collective.
    messages = on_two_ranks(_check_on_two_ranks)
    assert "the training loss is inf at step 2 (found before writing a checkpoint)" in messages[1]
    assert "the training loss is not finite at step 2 (on another rank, found before writing" in messages[0]
