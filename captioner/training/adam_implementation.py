"""Which of torch's Adam implementations a run uses, decided in one place from the device, the
precision and whether gradients are clipped.

- `fused`: one kernel for every tensor's update (fastest on a GPU). It unscales gradients inside
  its own step, so Lightning refuses to clip its gradients under mixed precision (16-mixed and
  bf16-mixed go through the same plugin check): there, `foreach` is used instead.
- `foreach`: a few batched kernels; works with every precision and with clipping.
- `loop`: one update per tensor (torch's default on a CPU, where there are no launches to save).
"""

from __future__ import annotations

from typing import Any

from captioner.errors import ConfigError
from captioner.settings.choices import ADAM_IMPLEMENTATIONS, FUSED_ADAM_CLIPPED, MIXED_PRECISIONS


def clips_under_mixed_precision(precision: str, clip_val: float | None) -> bool:
    return str(precision) in MIXED_PRECISIONS and bool(clip_val)


def adam_implementation(setting: str, device_type: str, precision: str, clip_val: float | None) -> str:
    """`setting` (auto | fused | foreach | loop) for a run on `device_type` ("cuda", "cpu", ...)."""
    if setting not in ADAM_IMPLEMENTATIONS:
        raise ConfigError(f"model.adam={setting!r}: expected one of {', '.join(ADAM_IMPLEMENTATIONS)}")
    clipped_mixed = clips_under_mixed_precision(precision, clip_val)
    if setting == "fused" and clipped_mixed:
        raise ConfigError(FUSED_ADAM_CLIPPED.format(precision=precision))
    if setting != "auto":
        return setting
    if device_type != "cuda":
        return "loop"
    return "foreach" if clipped_mixed else "fused"


def adam_options(implementation: str) -> dict[str, Any]:
    """torch.optim.Adam's keyword arguments for `implementation`."""
    return {"fused": {"fused": True}, "foreach": {"foreach": True, "fused": False},
            "loop": {"foreach": False, "fused": False}}[implementation]
