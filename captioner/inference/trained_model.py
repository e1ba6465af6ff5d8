"""A trained model back from its checkpoint, with the CNN blocks it fine-tuned.

A checkpoint of a run with `cnn.trainable_blocks` holds those blocks' weights; their architecture
is rebuilt here from the CNN record the checkpoint keeps (training/ cannot build CNNs itself).
"""

from __future__ import annotations

from pathlib import Path

from captioner.features.backbones import top_skeleton
from captioner.training.checkpoint_loading import load_module
from captioner.training.checkpoint_record import read_checkpoint_record
from captioner.training.module import CaptionModule


def load_trained(checkpoint: Path) -> CaptionModule:
    """`load_module`, with the architecture of the checkpoint's trainable CNN top if it has one."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        return load_module(checkpoint)  # its error names the missing file
    try:
        record = read_checkpoint_record(checkpoint).hyper_parameters.get("cnn") or {}
    except Exception:  # not a checkpoint: load_module says so
        return load_module(checkpoint)
    blocks = int(record.get("trainable_blocks", 0) or 0)
    return load_module(checkpoint, top_skeleton(record["cnn"], blocks) if blocks else None)

