"""The one record type every dataset source yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One image on disk with its reference captions and the split it belongs to."""

    image_id: str
    path: Path
    captions: list[str] = field(default_factory=list)
    split: str = "train"

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(
                f"image {self.image_id!r}: unknown split {self.split!r}, expected one of {SPLITS}")
        if not self.captions:
            raise ValueError(f"image {self.image_id!r} ({self.path}) has no captions")
