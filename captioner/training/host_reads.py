"""Counting where training code reads a tensor's value on the host (`.item()`, `bool()`, `.tolist()`...).

On a GPU each such read waits for every kernel queued before it (a host sync): the host can no
longer run ahead of the device, and a launch-bound step loses what the overlap hid (issue #25:
Trainer.fit ran at 58% of the compiled step). A CPU has no queue, but the same Python runs on it and
reads the same values, so counting the reads here names the per-step syncs a GPU run would make, in
a test, without a GPU. (`torch.cuda.set_sync_debug_mode` finds them on the device itself:
benchmarks/fit_overhead.py.)

    with HostReads() as reads:
        trainer.fit(module, ..., callbacks=[CountHostReadsPerStep(reads)])
    reads.per_step  # {global step: Counter({"pytorch_lightning/...:134 item": 1, ...})}
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from torch.overrides import TorchFunctionMode

REPO = Path(__file__).resolve().parents[2]
TORCH = Path(torch.__file__).resolve().parent
# Tensor methods that hand a value to Python or copy a tensor to the host (and so wait for a GPU to
# compute it). Not `.to(device)`: on a CPU its target is always the host, so a move onto the
# training device cannot be told from a copy back; `.cpu()` is always meant as one.
READS = frozenset({"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__",
                   "__format__", "__repr__"})


def shown_path(filename: str, root: Path = REPO) -> str:
    """`filename` relative to the checkout, or to site-packages for a library, or as it is."""
    path = Path(filename)
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        parts = path.parts
        return "/".join(parts[parts.index("site-packages") + 1:]) if "site-packages" in parts else filename


def _caller(frame: FrameType | None) -> tuple[FrameType | None, bool]:
    """The first frame outside torch, and whether the read came from inside torch.optim (whose
    non-capturable optimizers keep their step counts on the host: reading them waits for nothing)."""
    optimizer = False
    while frame is not None and Path(frame.f_code.co_filename).resolve().is_relative_to(TORCH):
        optimizer = optimizer or "/optim/" in frame.f_code.co_filename
        frame = frame.f_back
    return frame, optimizer


class HostReads(TorchFunctionMode):
    """Counts host reads of tensors made while `step` is set, in `per_step[step]`, by the line that
    asked (`path:line method`). Reads of an optimizer's host-side step counters are not counted."""

    def __init__(self, root: Path = REPO) -> None:
        super().__init__()
        self.root = root
        self.step: int | None = None  # None: not counting
        self.per_step: dict[int, Counter[str]] = defaultdict(Counter)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if torch.compiler.is_compiling():  # traced into a graph: no host read, and no Python to trace
            return func(*args, **(kwargs or {}))
        if self.step is not None:
            name = getattr(func, "__name__", "")
            if name in READS:
                frame, optimizer = _caller(sys._getframe(1))
                if frame is not None and not optimizer:
                    site = f"{shown_path(frame.f_code.co_filename, self.root)}:{frame.f_lineno} {name}"
                    self.per_step[self.step][site] += 1
        return func(*args, **(kwargs or {}))

    def total(self, steps: range | None = None) -> Counter[str]:
        """Reads by site, summed over `steps` (default: every step counted)."""
        summed: Counter[str] = Counter()
        for step, sites in self.per_step.items():
            if steps is None or step in steps:
                summed.update(sites)
        return summed


class CountHostReadsPerStep(pl.Callback):
    """Points `reads` at the current training step: from one batch's start to the next one's, so a
    step's count includes what Lightning does after the batch (logging, the progress bar's metrics).
    Validation and the epoch's end are not a step's: counting pauses for them (list this callback
    first, so that it pauses before the others' epoch-end hooks)."""

    def __init__(self, reads: HostReads) -> None:
        self.reads = reads

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.reads.step = trainer.global_step

    def on_validation_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.reads.step = None

    def on_train_epoch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.reads.step = None

    def on_exception(self, trainer: pl.Trainer, *args: Any) -> None:
        self.reads.step = None
