"""captions.json: one entry per test image (its caption, references, per-image scores, photo and
attention figure), written once per finished run and read by the sweep report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from captioner.paths import write_atomically
from captioner.records.per_image_scores import RunScores
from captioner.scoring.bleu_statistics import COUNTS
from captioner.settings.value_kinds import real_number


@dataclass(frozen=True)
class CaptionEntry:
    image_id: str
    caption: str
    references: list[str]
    cider: float | None = None  # CIDEr-D with the test split's document frequencies
    bleu_counts: list[float] | None = None  # BLEU's sufficient statistics (bleu_statistics.py)
    image: str = ""  # the photo's path ("" when unknown)
    attention: str | None = None  # the attention figure, relative to the run folder
    extra: dict[str, Any] = field(default_factory=dict)  # keys of other versions

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CaptionEntry:
        known = {f.name for f in fields(cls)} - {"extra"}
        entry = {k: v for k, v in values.items() if k in known}
        entry["image_id"] = str(entry["image_id"])
        return cls(**entry, extra={k: v for k, v in values.items() if k not in known})

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        extra = values.pop("extra")
        return {**extra, **{k: v for k, v in values.items() if v is not None}}


def write_caption_entries(path: Path, entries: Sequence[CaptionEntry]) -> None:
    write_atomically(path, json.dumps([e.as_dict() for e in entries], indent=2))


def read_caption_entries(path: Path) -> list[CaptionEntry]:
    """The entries of captions.json; OSError or ValueError when it is missing or damaged."""
    values = json.loads(Path(path).read_text())
    if not isinstance(values, list):
        raise ValueError(f"{path}: not a list of caption entries")
    try:
        entries = [CaptionEntry.from_dict(v) for v in values]
    except (KeyError, TypeError, AttributeError) as error:  # a key missing, an entry not a mapping
        raise ValueError(f"{path}: not a caption entry ({type(error).__name__}: {error})") from error
    for entry in entries:
        if entry.cider is not None and not real_number(entry.cider):
            raise ValueError(f"{path}: image {entry.image_id}'s cider is {entry.cider!r}, not a number")
        counts = entry.bleu_counts
        if counts is not None and not (isinstance(counts, list) and all(map(real_number, counts))):
            raise ValueError(f"{path}: image {entry.image_id}'s bleu_counts are {counts!r:.80}, not a list "
                             "of numbers")
        if counts is not None and len(counts) != len(COUNTS):
            raise ValueError(f"{path}: image {entry.image_id}'s bleu_counts hold {len(counts)} values, not "
                             f"BLEU's {len(COUNTS)}")
    return entries


def per_image_scores(entries: Sequence[CaptionEntry]) -> RunScores | None:
    """The entries' per-image scores, or None when a run wrote none (runs from before they had them)."""
    if not entries or any(e.cider is None or e.bleu_counts is None for e in entries):
        return None
    return RunScores(tuple(e.image_id for e in entries),
                     np.array([e.cider for e in entries], dtype=np.float64),
                     np.array([e.bleu_counts for e in entries], dtype=np.float64))
