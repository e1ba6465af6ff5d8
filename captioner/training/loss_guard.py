"""Stopping a run whose training loss turns NaN or infinite, without a host sync every step on a GPU.

On a CPU, reading the loss costs nothing: it is checked every step, and the run stops before the
bad gradients reach the weights. On a GPU, `bool(loss)` waits for the device every step, which
costs the compiled step much of its speed (issue #25). There the guard keeps a flag on the device,
plus the first bad value and its step. The flag is read at the end of each epoch and before any
checkpoint is written, so no checkpoint ever holds weights trained past a non-finite loss.

Under DDP the guard always defers, on a CPU too, and `check` takes the earliest bad step over the
ranks: the gradients' all-reduce has already carried one rank's bad loss into every rank's weights,
so every rank must stop (rank 0 writes the checkpoints), and a rank that raised alone would leave
the others waiting in their next collective.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

NO_STEP = -(2**62)  # "no bad loss" in the max-reduce of negated steps


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: the run stops and fails."""


def _message(value: float | str, step: int, context: str) -> str:
    return (f"the training loss is {value} at step {step} ({context}); the checkpoints written "
            "before it are kept. Lower model.lr (or scst.lr), or check the features")


class NonFiniteLossGuard:
    """`observe` every training loss; `check` where a deferred failure must surface."""

    def __init__(self) -> None:
        self._bad: torch.Tensor | None = None  # on the device: was any loss so far non-finite
        self._first_value: torch.Tensor | None = None  # the first such loss, and its step
        self._first_step: torch.Tensor | None = None

    def observe(self, loss: torch.Tensor, step: int, epoch: int, batch: int, every_step: bool) -> None:
        loss = loss.detach()
        if every_step:
            if not bool(torch.isfinite(loss)):
                raise NonFiniteLossError(_message(float(loss), step, f"epoch {epoch}, batch {batch}"))
            return
        bad = ~torch.isfinite(loss)
        if self._bad is None:
            self._bad, self._first_value = bad, loss.clone()
            self._first_step = torch.full_like(loss, step, dtype=torch.int64)
            return
        new = bad & ~self._bad  # only the first bad loss is kept; nothing here waits for the device
        self._first_value = torch.where(new, loss, self._first_value)
        self._first_step = torch.where(new, step, self._first_step)
        self._bad = self._bad | bad

    def check(self, where: str,
              across_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Raise NonFiniteLossError if any observed loss was not finite (one host sync).

        `across_ranks`: a max over the DDP ranks (`strategy.reduce`), called on every rank; then
        every rank raises when any rank saw a bad loss."""
        if across_ranks is None:
            if self._bad is not None and bool(self._bad):
                raise NonFiniteLossError(_message(float(self._first_value), int(self._first_step),
                                                  f"found {where}"))
            return
        none = torch.tensor(NO_STEP, dtype=torch.int64)
        mine = (none if self._bad is None  # nothing observed yet: still joins the collective
                else torch.where(self._bad, -self._first_step, none.to(self._bad.device)))
        earliest = int(across_ranks(mine))
        if earliest == NO_STEP:
            return
        step = -earliest
        if self._bad is not None and bool(self._bad) and int(self._first_step) == step:
            raise NonFiniteLossError(_message(float(self._first_value), step, f"found {where}"))
        raise NonFiniteLossError(_message("not finite", step, f"on another rank, found {where}"))
