"""Dataset sources: each reads one on-disk format and yields `ImageRecord`s.

Nothing downstream knows which dataset a record came from; adding a dataset means adding a
module here and a line to `SOURCES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from captioner.errors import ConfigError
from captioner.sources import coco, flickr8k, flickr30k, iapr, shapes
from captioner.sources.checks import DatasetLayoutError
from captioner.sources.record import SPLITS, ImageRecord

SOURCES: dict[str, Callable[[Path, Any], list[ImageRecord]]] = {
    "shapes": shapes.load_records,
    "coco": coco.load_records,
    "flickr8k": flickr8k.load_records,
    "flickr30k": flickr30k.load_records,
    "iapr": iapr.load_records,
}


def load_records(source: str, root: Path, options: Mapping[str, Any]) -> list[ImageRecord]:
    """Read the records of dataset format `source` from `root`."""
    try:
        reader = SOURCES[source]
    except KeyError:
        raise ConfigError(
            f"unknown dataset source {source!r}; known sources: {', '.join(sorted(SOURCES))}"
        ) from None
    records = reader(Path(root), options)
    if not records:
        raise DatasetLayoutError(f"dataset source {source!r} found no images under {root}; point "
                                 "dataset.root at the unpacked dataset (see its module's layout)")
    return records


__all__ = ["SPLITS", "ImageRecord", "SOURCES", "load_records"]
