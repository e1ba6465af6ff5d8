"""The fast training step's settings, decided once per run from the config and the devices.

`model.compile` compiles the training pass (CUDA graphs on a GPU); the compiled pass needs one
shape, so the datamodule then pads every caption to the longest and drops the last, smaller
batch. One GPU also keeps the train split's features on the device (`data.resident`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from captioner.model.compiled import use_compile
from captioner.model.tokens import CaptionLength
from captioner.settings import RunSettings


@dataclass(frozen=True)
class FastPath:
    compiled: bool
    resident_device: str | None  # where the train features live, or None: streamed by the loader
    caption_length: CaptionLength

    @property
    def static_caption_length(self) -> int | None:
        """Tokens every training row is padded to when compiled (one shape); None: padded per batch."""
        return self.caption_length.with_start_and_end if self.compiled else None


def planned_steps(settings: RunSettings, train_captions: int) -> int | None:
    """Optimizer steps of the cross-entropy fit (batches of the train captions, the last, smaller
    one dropped when compiled); None when the run sets no bound."""
    epochs, max_steps = settings.trainer.max_epochs, settings.trainer.options.get("max_steps") or -1
    per_epoch = max(1, train_captions // settings.data.batch_size)
    bounds = [epochs * per_epoch] if epochs > 0 else []
    bounds += [max_steps] if max_steps > 0 else []
    return min(bounds) if bounds else None


def fast_path(settings: RunSettings, gpus: list[int] | None, train_captions: int) -> FastPath:
    """`train_captions`: how many the train split has (compiling pays only over enough steps)."""
    accelerator = settings.trainer.accelerator
    on_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    setting = settings.model.compile
    if setting == "auto" and settings.trainer.devices != 1:
        setting = "false"  # auto compiles single-device runs only: DDP's hooks around a graph are untested
    resident = on_cuda and gpus is not None and len(gpus) == 1 and settings.data.resident
    steps = planned_steps(settings, train_captions)
    return FastPath(compiled=use_compile(setting, "cuda" if on_cuda else "cpu", steps),
                    resident_device=f"cuda:{gpus[0]}" if resident else None,
                    caption_length=CaptionLength(settings.text.max_caption_length))
