"""Stopping a run whose training loss turns NaN or infinite, without a host sync every step on a GPU.

On a CPU, reading the loss costs nothing: it is checked every step, and the run stops before the
bad gradients reach the weights. On a GPU, `bool(loss)` waits for the device every step, which
costs the compiled step much of its speed (issue #25). There the guard keeps a flag on the device,
plus the first bad value and its step. The flag is read at the end of each epoch and before any
checkpoint is written, so no checkpoint ever holds weights trained past a non-finite loss.
"""

from __future__ import annotations

import torch


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: the run stops and fails."""


def _message(value: float, step: int, context: str) -> str:
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

    def check(self, where: str) -> None:
        """Raise NonFiniteLossError if any observed loss was not finite (one host sync)."""
        if self._bad is not None and bool(self._bad):
            raise NonFiniteLossError(_message(float(self._first_value), int(self._first_step),
                                              f"found {where}"))
