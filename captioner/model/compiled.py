"""The decoder's teacher-forced pass compiled once (torch.compile; CUDA graphs on a GPU).

A training step is 21 small recurrent steps of a handful of small kernels each: on a GPU it is
launch-bound, and CUDA graphs (`mode="reduce-overhead"`) replay the whole pass, forward and
backward, as one launch. Graphs need static shapes: the datamodule pads every caption to the
configured maximum and drops the last, smaller batch (`static_caption_length`, `drop_last`), so
the pass compiles once per process and never per batch (`compiled_graphs()` counts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

# What compiling costs and saves, measured on an H200 (torch 2.11; docs/benchmarks.md, issue #25):
# Trainer.fit at batch 64 took 36.9 ms a step eager and 6.2 ms compiled with CUDA graphs, and
# compiling made the default job's 744-step fit 15 s slower instead of 23 s faster: ~38 s to compile.
COMPILE_SECONDS = 38.0
SAVED_SECONDS_PER_STEP = 0.0307


def compile_pays(planned_steps: int | None) -> bool:
    """Whether the optimizer steps a run plans save more than compiling costs (None: no bound on
    the steps, so it pays)."""
    return planned_steps is None or planned_steps * SAVED_SECONDS_PER_STEP > COMPILE_SECONDS


def use_compile(setting: Any, device_type: str, planned_steps: int | None = None) -> bool:
    """`model.compile`: auto (on CUDA when `compile_pays(planned_steps)`; off elsewhere: measured
    slower on a 2-core CPU), true, false."""
    if setting is None or str(setting).lower() == "auto":
        return device_type == "cuda" and compile_pays(planned_steps)
    if isinstance(setting, bool):
        return setting
    if str(setting).lower() in ("true", "false"):
        return str(setting).lower() == "true"
    raise ValueError(f"model.compile={setting!r}: expected auto, true or false")


def compile_mode(device_type: str) -> str:
    """CUDA graphs on a GPU; on a CPU there are no launches to save, only fusion."""
    return "reduce-overhead" if device_type == "cuda" else "default"


class CompiledForward:
    """`decoder(features, tokens)`, compiled for fixed shapes.

    Not an nn.Module on purpose: the decoder's parameters (and so every checkpoint's keys) stay
    where they are. On CUDA the outputs live in the graph's memory and are overwritten by the
    next replay: use them (compute the loss) before the next call, clone what you keep.
    """

    def __init__(self, decoder: nn.Module, mode: str | None = None, backend: str = "inductor"):
        self.decoder = decoder
        self.mode = mode
        self.forward = torch.compile(decoder.forward, mode=mode, dynamic=False, fullgraph=True,
                                     backend=backend)

    def __call__(self, features: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # one training step = one graph iteration
        return self.forward(features, tokens)


def compiled_graphs() -> int:
    """Graphs torch.compile has produced in this process so far (first compiles and recompiles)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def gradients_match(compiled: Sequence[torch.Tensor], eager: Sequence[torch.Tensor], rtol: float = 1e-2,
                    atol: float = 1e-6) -> tuple[bool, float]:
    """(equal?, the worst difference relative to its tensor's largest eager entry) of two lists of
    gradients. `atol` is an absolute floor: a gradient that is 0 in truth (the attention score's
    bias: softmax ignores a shift) comes out as rounding noise, 1e-9 eager against 3e-10 compiled,
    and must not count as a mismatch."""
    worst, equal = 0.0, True
    for mine, theirs in zip(compiled, eager, strict=True):
        difference = (mine.float() - theirs.float()).abs().max().item()
        scale = theirs.float().abs().max().item()
        worst = max(worst, difference / max(scale, 1e-12))
        equal = equal and difference <= atol + rtol * scale
    return equal, worst
