"""MS-COCO 2014 captions.

`annotations/captions_{train,val}2014.json` list the images (`id`, `file_name`) and captions
(`image_id`, `caption`); images live in `train2014/` and `val2014/`. Splits:

- `karpathy`: Karpathy's `dataset_coco.json` (train + restval -> train, 5000 val, 5000 test);
- `random`: a seeded shuffle of the images cut by `split_fractions`.

`max_captions` reproduces the prior study's subset: shuffle all captions with `seed`, keep the
first N and the images they belong to. `max_images` then keeps a seeded sample of images.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from captioner.errors import ConfigError
from captioner.sources.checks import DatasetFormatError, require_file, require_images, require_root
from captioner.sources.karpathy import read_karpathy_split
from captioner.sources.record import ImageRecord, real_captions
from captioner.sources.splits import random_splits
from captioner.sources.text_files import read_text

log = logging.getLogger(__name__)

DOWNLOAD = ("MS-COCO 2014 comes from cocodataset.org: train2014.zip, val2014.zip and "
            "annotations_trainval2014.zip (Karpathy's dataset_coco.json for split=karpathy).")
PARTS = ("train2014", "val2014")


def load_records(root: Path, options: Mapping[str, Any]) -> list[ImageRecord]:
    root = require_root(root, "coco", DOWNLOAD)
    split = options.get("split", "random")
    if split == "karpathy":
        if options.get("max_captions"):  # the prior study's subset is drawn from the official captions
            raise ConfigError("dataset.max_captions applies to dataset.split=random (the official "
                             "annotations); with split=karpathy, use dataset.max_images")
        records = read_karpathy_split(root / options.get("karpathy_json", "dataset_coco.json"), root, "coco",
                                      images_option=None)
        return _subset(records, options)
    if split != "random":
        raise ConfigError(f"dataset.split={split!r}: expected karpathy or random")
    captions: dict[str, list[str]] = defaultdict(list)
    paths: dict[str, Path] = {}
    pairs = []
    for part in PARTS:
        file = require_file(root / "annotations" / f"captions_{part}.json", "coco", f"{part} captions")
        names, part_pairs = read_captions_file(file)
        pairs += part_pairs
        for name in names.values():
            paths[name] = root / part / name
    seed = options.get("seed", 0)
    if options.get("max_captions"):
        random.Random(seed).shuffle(pairs)
        pairs = pairs[: options["max_captions"]]
    for name, caption in pairs:
        captions[name].append(caption)
    captions = real_captions(captions, "coco", root / "annotations")
    present = sorted(name for name in captions if paths[name].is_file())
    if len(present) < len(captions):
        log.warning("coco: skipped %d captioned images that are not on disk", len(captions) - len(present))
    records = [ImageRecord(Path(name).stem, paths[name], captions[name], "train") for name in present]
    require_images(records, "coco", root / PARTS[0], root / "annotations")
    records = _subset(records, options)
    splits = random_splits(len(records), dict(options.get("split_fractions")), seed)
    return [ImageRecord(r.image_id, r.path, r.captions, s) for r, s in zip(records, splits, strict=True)]


def read_captions_file(file: Path) -> tuple[dict[int, str], list[tuple[str, str]]]:
    """Image id -> file name, and (file name, caption) pairs, of one `captions_*.json`."""
    try:
        content = json.loads(read_text(file, "coco"))
        images, annotations = content["images"], content["annotations"]
        if not isinstance(images, list) or not isinstance(annotations, list):
            raise TypeError("'images' and 'annotations' must be lists")
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetFormatError(f"{file}: not a COCO captions file ({error})") from error
    names = {}
    for index, image in enumerate(images):
        _require(image, index, "images", ("id", "file_name"), file)
        names[image["id"]] = image["file_name"]
    pairs = []
    for index, annotation in enumerate(annotations):
        _require(annotation, index, "annotations", ("image_id", "caption"), file)
        if annotation["image_id"] not in names:
            raise DatasetFormatError(f"{file}: annotations[{index}] (id {annotation.get('id')}) names "
                                     f"image_id {annotation['image_id']}, which 'images' does not list")
        pairs.append((names[annotation["image_id"]], annotation["caption"]))
    return names, pairs


def _require(entry: object, index: int, array: str, keys: tuple[str, ...], file: Path) -> None:
    """Each of `keys` is present and not null (`caption` is a string) in `array[index]`."""
    where = f"{file}: {array}[{index}]"
    if not isinstance(entry, dict):
        raise DatasetFormatError(f"{where} is a {type(entry).__name__}, not an object")
    where += f" (id {entry.get('id')}" + (f", image_id {entry['image_id']})" if "image_id" in entry else ")")
    for key in keys:
        if entry.get(key) is None:
            problem = "has no field" if key not in entry else "has null in"
            raise DatasetFormatError(f"{where} {problem} '{key}'; fix or remove that entry")
    if "caption" in keys and not isinstance(entry["caption"], str):
        raise DatasetFormatError(f"{where}: 'caption' is a {type(entry['caption']).__name__}, not a string")


def _subset(records: list[ImageRecord], options: Mapping[str, Any]) -> list[ImageRecord]:
    limit = options.get("max_images")
    if not limit or limit >= len(records):
        return records
    chosen = sorted(random.Random(options.get("seed", 0)).sample(range(len(records)), limit))
    return [records[i] for i in chosen]
