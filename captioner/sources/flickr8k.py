"""Flickr8k in any of its three common layouts.

- official (the original zip): `Flickr8k.token.txt` (`name.jpg#k<TAB>caption`),
  `Flickr_8k.{train,dev,test}Images.txt`, images in `Flicker8k_Dataset/` (sic);
- csv (the Kaggle copy): `captions.txt` (`image,caption` with a header), images in `Images/`;
  it has no split files, so splits are drawn at random with a seed;
- karpathy: `dataset_flickr8k.json`, images in `Flicker8k_Dataset/`.

`layout: auto` takes the first of these whose files are present. Entries whose image does not
exist (the token file names `2258277193_586949ec62.jpg.1`, which never did) are skipped and
counted, not fatal.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from captioner.errors import ConfigError
from captioner.sources.checks import (
    DatasetFormatError,
    DatasetLayoutError,
    require_file,
    require_images,
    require_root,
)
from captioner.sources.karpathy import read_karpathy_split
from captioner.sources.record import ImageRecord, real_captions
from captioner.sources.splits import random_splits
from captioner.sources.text_files import read_text, text_lines

log = logging.getLogger(__name__)

DOWNLOAD = ("Flickr8k is distributed by the University of Illinois (Flickr8k_Dataset.zip and "
            "Flickr8k_text.zip), or as the Kaggle 'flickr8k' copy with captions.txt.")
OFFICIAL_SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
                        "test": "Flickr_8k.testImages.txt"}


def load_records(root: Path, options: Mapping[str, Any]) -> list[ImageRecord]:
    root = require_root(root, "flickr8k", DOWNLOAD)
    layout = options.get("layout", "auto")
    if layout == "auto":
        layout = _detect_layout(root, options)
    if layout == "official":
        return _official(root, Path(root, options.get("images_dir", "Flicker8k_Dataset")))
    if layout == "csv":
        return _csv(root, Path(root, options.get("images_dir_csv", "Images")), options)
    if layout == "karpathy":
        return read_karpathy_split(root / options.get("karpathy_json", "dataset_flickr8k.json"),
                                   Path(root, options.get("images_dir", "Flicker8k_Dataset")), "flickr8k")
    raise ConfigError(f"dataset.layout={layout!r}: expected auto, official, csv or karpathy")


def _detect_layout(root: Path, options: Mapping[str, Any]) -> str:
    if (root / "Flickr8k.token.txt").is_file():
        return "official"
    if (root / "captions.txt").is_file():
        return "csv"
    if (root / options.get("karpathy_json", "dataset_flickr8k.json")).is_file():
        return "karpathy"
    raise DatasetLayoutError(
        f"flickr8k: {root} holds none of Flickr8k.token.txt (official zip), captions.txt (Kaggle) "
        f"or dataset_flickr8k.json (Karpathy). {DOWNLOAD}")


def _official(root: Path, images_dir: Path) -> list[ImageRecord]:
    token_file = require_file(root / "Flickr8k.token.txt", "flickr8k", "the captions")
    if not images_dir.is_dir():  # e.g. only Flickr8k_text.zip unpacked
        require_images([], "flickr8k", images_dir, token_file, "images_dir")
    captions = real_captions(_read_token_file(token_file), "flickr8k", token_file)
    split_of = _read_split_files(root)
    _require_captioned_images_in_splits(captions, split_of, token_file)
    records, missing, unsplit = [], [], 0
    for image, texts in captions.items():
        if image not in split_of:
            unsplit += 1
            continue
        path = images_dir / image
        if not path.is_file():
            missing.append(image)
            continue
        records.append(ImageRecord(Path(image).stem, path, texts, split_of[image]))
    if missing:
        log.warning("flickr8k: skipped %d captioned images missing from %s (e.g. %s)",
                    len(missing), images_dir, ", ".join(missing[:3]))
    if unsplit:
        log.warning("flickr8k: skipped %d captioned images listed in no split file (%s)", unsplit,
                    ", ".join(OFFICIAL_SPLIT_FILES.values()))
    return require_images(records, "flickr8k", images_dir, token_file, "images_dir")


def _read_token_file(token_file: Path) -> dict[str, list[str]]:
    """Image name -> its captions, from the `name.jpg#k<TAB>caption` lines of `token_file`."""
    captions: dict[str, list[str]] = defaultdict(list)
    line_of: dict[str, int] = {}  # name.jpg#k -> the line that gave it
    for number, line in enumerate(text_lines(read_text(token_file, "flickr8k")), 1):
        if not line.strip():
            continue
        key, sep, caption = line.partition("\t")
        if not sep or "#" not in key:
            raise DatasetFormatError(f"{token_file}:{number}: expected 'name.jpg#k<TAB>caption', "
                                     f"got {line[:80]!r}")
        key = key.strip()
        if key in line_of:  # e.g. the file concatenated twice: every image would get each caption twice
            raise DatasetFormatError(f"{token_file}:{number}: {key} repeats line {line_of[key]}; each "
                                     "name.jpg#k is one caption, so remove the repeated lines")
        line_of[key] = number
        captions[key.rsplit("#", 1)[0]].append(caption)
    return captions


def _read_split_files(root: Path) -> dict[str, str]:
    """Image name -> the split whose official file lists it."""
    split_of: dict[str, str] = {}
    for split, name in OFFICIAL_SPLIT_FILES.items():
        listed = require_file(root / name, "flickr8k", f"the {split} split")
        for image in read_text(listed, "flickr8k").split():
            if split_of.get(image, split) != split:  # in two splits: its captions would leak
                other = split_of[image]
                raise DatasetFormatError(f"{listed}: {image} is also in the {other} split "
                                         f"({OFFICIAL_SPLIT_FILES[other]}); an image belongs to one")
            split_of[image] = split
    return split_of


def _require_captioned_images_in_splits(captions: Mapping[str, list[str]], split_of: Mapping[str, str],
                                        token_file: Path) -> None:
    """An error naming the split files when they list none of the captioned images (say as
    'Flicker8k_Dataset/x.jpg'): every image would be skipped as unsplit, and the error that no
    image was found would blame the image folder, where the images are."""
    if not captions or any(image in split_of for image in captions):
        return
    listed = f"they list e.g. {next(iter(split_of))!r}" if split_of else "they list no image"
    raise DatasetFormatError(
        f"flickr8k: the split files {', '.join(OFFICIAL_SPLIT_FILES.values())} in {token_file.parent} "
        f"name no captioned image of {token_file} ({listed}; {token_file.name} names e.g. "
        f"{next(iter(captions))!r}); "
        "list each image by its file name alone, as the official files do")


def _csv(root: Path, images_dir: Path, options: Mapping[str, Any]) -> list[ImageRecord]:
    table = require_file(root / "captions.txt", "flickr8k", "the captions")
    if not images_dir.is_dir():
        require_images([], "flickr8k", images_dir, table, "images_dir_csv")
    captions: dict[str, list[str]] = defaultdict(list)
    reader = csv.DictReader(io.StringIO(read_text(table, "flickr8k"), newline=""))
    if reader.fieldnames is None or not {"image", "caption"} <= {f.strip() for f in reader.fieldnames}:
        raise DatasetFormatError(f"{table}: expected a header 'image,caption', got {reader.fieldnames}")
    reader.fieldnames = [f.strip() for f in reader.fieldnames]
    for row in reader:
        if row.get(None):  # more fields than the header: a caption's comma was not quoted
            raise DatasetFormatError(f"{table}:{reader.line_num}: more fields than the header "
                                     f"'image,caption' ({row[None]!r} left over): quote a caption "
                                     'that has a comma ("A dog , running .")')
        if row["image"]:
            captions[row["image"].strip()].append(row["caption"] or "")
    captions = real_captions(captions, "flickr8k", table)
    present = {image: texts for image, texts in captions.items() if (images_dir / image).is_file()}
    if len(present) < len(captions):
        log.warning("flickr8k: skipped %d captioned images missing from %s",
                    len(captions) - len(present), images_dir)
    images = sorted(present)
    splits = random_splits(len(images), dict(options.get("split_fractions")), options.get("seed", 0))
    records = [ImageRecord(Path(image).stem, images_dir / image, present[image], split)
               for image, split in zip(images, splits, strict=True)]
    return require_images(records, "flickr8k", images_dir, table, "images_dir_csv")
