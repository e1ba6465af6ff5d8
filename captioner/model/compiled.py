"""The decoder's teacher-forced pass compiled once (torch.compile; CUDA graphs on a GPU).

A training step is 21 small recurrent steps of a handful of small kernels each: on a GPU it is
launch-bound, and CUDA graphs (`mode="reduce-overhead"`) replay the whole pass, forward and
backward, as one launch. Graphs need static shapes: the datamodule pads every caption to the
configured maximum and drops the last, smaller batch (`static_caption_length`, `drop_last`), so
the pass compiles once per process and never per batch (`compiled_graphs()` counts).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def use_compile(setting: Any, device_type: str) -> bool:
    """`model.compile`: auto (on for CUDA, off elsewhere: measured slower on a 2-core CPU), true, false."""
    if setting is None or str(setting).lower() == "auto":
        return device_type == "cuda"
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
