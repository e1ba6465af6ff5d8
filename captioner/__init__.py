"""captioner: CNN + attention-RNN image captioning experiments.

From Python:

    from captioner import Captioner, evaluate_checkpoint
    model = Captioner.from_checkpoint("outputs/<date>/<time>/checkpoints/last.ckpt", device="cuda")
    results = model.caption(["a.jpg", "b.png"], decode="beam", beam_size=3)
    scores = evaluate_checkpoint("outputs/<date>/<time>/checkpoints/last.ckpt", split="test")

Both are imported on first use, so `import captioner` (and every command) starts fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Captioner", "CaptionResult", "evaluate_checkpoint"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from captioner.inference import captioning

        return getattr(captioning, name)
    raise AttributeError(f"module 'captioner' has no attribute {name!r}")
