"""The cross-entropy stage's learning-rate schedule (`model.lr_schedule`), in Lightning's format.

- `constant`: `model.lr` throughout (after `warmup_steps`, if any);
- `cosine`: linear warm-up over `warmup_steps`, then cosine decay to `min_lr_ratio` x lr at the
  last training step (per step, so it follows `trainer.max_epochs` and `limit_train_batches`);
- `plateau`: ReduceLROnPlateau on val/cider: x `plateau_factor` at the validation that makes
  more than `plateau_patience` in a row without a better CIDEr-D (0: at the first such one;
  PyTorch's own count, which the committed runs trained with). The module steps it when each
  validation ends (`plateau_scheduler`), not Lightning after the epoch: Lightning's step came after
  the epoch-end checkpoint, so a resume from that checkpoint cut the lr an epoch late.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from captioner.errors import ConfigError
from captioner.settings.choices import LR_SCHEDULES

SCHEDULES = LR_SCHEDULES


def warmup_cosine(step: int, warmup_steps: int, total_steps: int | None, min_lr_ratio: float) -> float:
    """The factor on lr at optimiser step `step` (0-based); `total_steps` None: no decay."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps is None:
        return 1.0
    # steps run 0..total_steps-1: the last one trained is at the floor
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def with_lr_schedule(optimizer: torch.optim.Optimizer, schedule: dict[str, Any] | None,
                     total_steps: Callable[[], float]) -> Any:
    """What `configure_optimizers` returns: the optimizer alone (constant without warm-up, and
    plateau, which the module steps itself: `plateau_scheduler`), or with its scheduler.

    `total_steps` is asked only by `cosine`: Lightning's `estimated_stepping_batches` builds the
    train loader and fetches a batch before a resume restores the loader's position.
    """
    schedule = dict(schedule or {})
    name = schedule.get("name", "constant")
    warmup = int(schedule.get("warmup_steps", 0) or 0)
    if name not in SCHEDULES:
        raise ConfigError(f"model.lr_schedule.name={name!r}: expected one of {', '.join(SCHEDULES)}")
    if name == "plateau" or (name == "constant" and warmup == 0):
        return optimizer
    total = None
    if name == "cosine":
        total_steps = total_steps()
        if not math.isfinite(total_steps):
            raise ConfigError("model.lr_schedule.name=cosine needs a finite trainer.max_epochs "
                              "(it decays to the last step); use constant or plateau for open-ended runs")
        total = int(total_steps)
    ratio = float(schedule.get("min_lr_ratio", 0.0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, total, ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def plateau_scheduler(optimizer: torch.optim.Optimizer,
                      schedule: dict[str, Any] | None) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The plateau schedule on val/cider (None for the others), for the module to step with each
    validation's CIDEr-D."""
    schedule = dict(schedule or {})
    if schedule.get("name", "constant") != "plateau":
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=float(schedule.get("plateau_factor", 0.5)),
        patience=int(schedule.get("plateau_patience", 1)))


def earlier_plateau_state(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The plateau's state in a checkpoint: the module's, or, in one written before the module
    stepped it, Lightning's (its `lr_schedulers`)."""
    if checkpoint.get("plateau") is not None:
        return checkpoint["plateau"]
    return next((state for state in checkpoint.get("lr_schedulers") or ()
                 if isinstance(state, dict) and "num_bad_epochs" in state), None)
