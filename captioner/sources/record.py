"""The one record type every dataset source yields."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)
Key = TypeVar("Key", bound=Hashable)

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


def is_caption(text: str) -> bool:
    """A reference needs a letter or a digit: an empty or punctuation-only line says nothing."""
    return any(character.isalnum() for character in text)


def real_captions(captions: Mapping[Key, list[str]], dataset: str, source: object) -> dict[Key, list[str]]:
    """`captions` (image -> texts) stripped, without empty or punctuation-only texts and without
    the images left with none; what was dropped is one warning line naming `source`."""
    kept: dict[Key, list[str]] = {}
    dropped = 0
    for image, texts in captions.items():
        real = [text.strip() for text in texts if is_caption(text)]
        dropped += len(texts) - len(real)
        if real:
            kept[image] = real
    if dropped:
        log.warning("%s: dropped %d empty or punctuation-only captions in %s, and %d images left "
                    "with no caption", dataset, dropped, source, len(captions) - len(kept))
    return kept
