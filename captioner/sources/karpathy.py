"""Karpathy's split files (`dataset_coco.json`, `dataset_flickr8k.json`, `dataset_flickr30k.json`).

Each image entry has `filename`, `split` (train / val / test / restval), `sentences[].raw` and,
for COCO, `filepath` (train2014 / val2014). `restval` joins train, as in every paper using them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from captioner.sources.checks import DatasetFormatError, require_file, require_images
from captioner.sources.record import ImageRecord, real_captions
from captioner.sources.text_files import read_text

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def read_karpathy_split(json_path: Path, images_dir: Path, dataset: str,
                        images_option: str | None = "images_dir") -> list[ImageRecord]:
    """Records of every image in the file whose image exists under `images_dir` (the folder
    the dataset key `images_option` names, if any)."""
    require_file(json_path, dataset, "Karpathy's split file")
    try:
        entries = json.loads(read_text(json_path, dataset))["images"]
        if not isinstance(entries, list):
            raise TypeError(f"'images' is a {type(entries).__name__}, not a list")
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetFormatError(f"{json_path}: not a Karpathy split file ({error})") from error
    captions, places = {}, {}
    for index, entry in enumerate(entries):
        filename, split, sentences = _fields(entry, index, json_path)
        places[index] = (Path(images_dir) / str(entry.get("filepath", "")) / filename, SPLIT_NAMES[split])
        captions[index] = [_raw(sentence, entry, index, json_path) for sentence in sentences]
    captions = real_captions(captions, dataset, json_path)
    records = [ImageRecord(path.stem, path, captions[index], split)
               for index, (path, split) in places.items() if index in captions and path.is_file()]
    if len(records) < len(entries):
        log.warning("%s: skipped %d entries of %s whose image is missing from %s or that have no caption",
                    dataset, len(entries) - len(records), json_path, images_dir)
    return require_images(records, dataset, images_dir, json_path, images_option)


def _where(entry: object, index: int, json_path: Path) -> str:
    """`file: image entry N (imgid ..., name.jpg)`, to name the entry an error is about."""
    known = [f"{key} {entry[key]}" for key in ("imgid", "cocoid", "filename")
             if isinstance(entry, dict) and key in entry]
    return f"{json_path}: image entry {index}" + (f" ({', '.join(known)})" if known else "")


def _fields(entry: object, index: int, json_path: Path) -> tuple[str, str, list]:
    if not isinstance(entry, dict):
        raise DatasetFormatError(f"{_where(entry, index, json_path)} is a {type(entry).__name__}, not "
                                 "an object; use Karpathy's original file (caption_datasets.zip)")
    for key, kind in (("filename", str), ("split", str), ("sentences", list)):
        if not isinstance(entry.get(key), kind):
            problem = "has no field" if key not in entry else f"has a {type(entry[key]).__name__} in"
            raise DatasetFormatError(
                f"{_where(entry, index, json_path)} {problem} '{key}' (expected a {kind.__name__}); "
                "use Karpathy's original file (caption_datasets.zip), or fix that entry")
    if entry["split"] not in SPLIT_NAMES:
        raise DatasetFormatError(f"{_where(entry, index, json_path)}: unknown split {entry['split']!r}, "
                                 f"expected one of {', '.join(SPLIT_NAMES)}")
    return entry["filename"], entry["split"], entry["sentences"]


def _raw(sentence: object, entry: dict, index: int, json_path: Path) -> str:
    raw = sentence.get("raw") if isinstance(sentence, dict) else None
    if not isinstance(raw, str):
        found = "no field 'raw'" if not isinstance(sentence, dict) or "raw" not in sentence \
            else f"a {type(raw).__name__} 'raw'"
        raise DatasetFormatError(f"{_where(entry, index, json_path)}: a sentence has {found} "
                                 "(expected the caption text); fix that entry or use Karpathy's original "
                                 "file")
    return raw
