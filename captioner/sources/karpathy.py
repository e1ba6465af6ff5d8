"""Karpathy's split files (`dataset_coco.json`, `dataset_flickr8k.json`, `dataset_flickr30k.json`).

Each image entry has `filename`, `split` (train / val / test / restval), `sentences[].raw` and,
for COCO, `filepath` (train2014 / val2014). `restval` joins train, as in every paper using them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from captioner.sources.checks import require_file
from captioner.sources.record import ImageRecord

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def read_karpathy_split(json_path: Path, images_dir: Path, dataset: str) -> list[ImageRecord]:
    """Records of every image in the file whose image exists under `images_dir`."""
    require_file(json_path, dataset, "Karpathy's split file")
    try:
        entries = json.loads(Path(json_path).read_text(encoding="utf-8"))["images"]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{json_path}: not a Karpathy split file ({error})") from error
    records, missing = [], 0
    for entry in entries:
        path = Path(images_dir) / entry.get("filepath", "") / entry["filename"]
        captions = [s["raw"].strip() for s in entry.get("sentences", []) if s.get("raw", "").strip()]
        if not path.is_file() or not captions:
            missing += 1
            continue
        records.append(ImageRecord(Path(entry["filename"]).stem, path, captions,
                                   SPLIT_NAMES[entry["split"]]))
    if missing:
        log.warning("%s: skipped %d entries of %s whose image is missing or that have no caption",
                    dataset, missing, json_path)
    return records
