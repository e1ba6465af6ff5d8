"""The non-finite loss guard's arithmetic when it defers (as on a GPU): the first bad loss and its
step are kept on the device, and `check` raises only when one was seen."""

from __future__ import annotations

import math

import pytest
import torch

from captioner.training.loss_guard import NonFiniteLossError, NonFiniteLossGuard


def _observe(guard: NonFiniteLossGuard, losses: list[float], every_step: bool = False) -> None:
    for step, value in enumerate(losses):
        guard.observe(torch.tensor(value), step, epoch=0, batch=step, every_step=every_step)


def test_finite_losses_pass_every_check():
    guard = NonFiniteLossGuard()
    guard.check("before anything was observed")
    _observe(guard, [3.0, 2.5, 1e30])
    guard.check("at the end of epoch 0")


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
