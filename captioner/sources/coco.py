"""MS-COCO captions, laid out as the 2014 or the 2017 release unpacks.

2014: `annotations/captions_{train,val}2014.json` list the images (`id`, `file_name`) and captions
(`image_id`, `caption`); images live in `train2014/` and `val2014/` (`COCO_val2014_<id>.jpg`).
2017: the same images and captions re-cut into `train2017/` and `val2017/` (`<id>.jpg`, ids 12
digits), listed in `annotations/captions_{train,val}2017.json`. The layout is detected: 2017 when
none of 2014's files and folders is in `dataset.root` and some of 2017's are, else 2014 (as
before 2017 was read). `+dataset.year=2014|2017` chooses for a root that holds both (not a key of
conf/dataset/coco.yaml: a new key there would change every COCO run's settings key, and a resumed
sweep would no longer find its completed runs).

Splits:

- `karpathy`: Karpathy's `dataset_coco.json` (train + restval -> train, 5000 val, 5000 test). It
  names 2014 files: with the 2017 layout its images are matched by COCO id (`cocoid`; the 2017
  images keep their ids) and the captions are the 2017 annotations' (the same captions);
- `random`: a seeded shuffle of both parts' images cut by `split_fractions`. The same for 2017,
  whose test images ship without captions: train2017 and val2017 are pooled as 2014's parts are.

`max_captions` reproduces the prior study's subset: shuffle all captions with `seed`, keep the
first N and the images they belong to (a subset of 2014's files: 2017's list the captions in
another order, so the same seed draws another subset). `max_images` then keeps a seeded sample of
images.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioner.errors import ConfigError
from captioner.sources.checks import DatasetFormatError, DatasetLayoutError, require_images, require_root
from captioner.sources.karpathy import SPLIT_NAMES, read_karpathy_split
from captioner.sources.record import ImageRecord, real_captions
from captioner.sources.splits import random_splits
from captioner.sources.text_files import read_text

log = logging.getLogger(__name__)

DOWNLOAD = ("MS-COCO comes from cocodataset.org: train2014.zip, val2014.zip and "
            "annotations_trainval2014.zip, or the 2017 release's train2017.zip, val2017.zip and "
            "annotations_trainval2017.zip; split=karpathy also needs Karpathy's dataset_coco.json "
            "(caption_datasets.zip).")
# Each release's image folders; its captions files are annotations/captions_<part>.json.
PARTS = {"2014": ("train2014", "val2014"), "2017": ("train2017", "val2017")}


def load_records(root: Path, options: Mapping[str, Any]) -> list[ImageRecord]:
    """Records of the COCO release in `root`, split as `dataset.split` says."""
    root = require_root(root, "coco", DOWNLOAD)
    split = options.get("split", "random")
    if split not in ("karpathy", "random"):
        raise ConfigError(f"dataset.split={split!r}: expected karpathy or random")
    year = release(root, options)
    if split == "karpathy":
        if options.get("max_captions"):  # the prior study's subset is drawn from the official captions
            raise ConfigError("dataset.max_captions applies to dataset.split=random (the official "
                             "annotations); with split=karpathy, use dataset.max_images")
        json_path = _require_karpathy_file(root / options.get("karpathy_json", "dataset_coco.json"))
        if year == "2014":
            records = read_karpathy_split(json_path, root, "coco", images_option=None)
        else:
            records = _karpathy_by_id(root, year, json_path)
        return _subset(records, options)
    return _random_split(root, year, options)


def release(root: Path, options: Mapping[str, Any]) -> str:
    """The release `root` is read as, "2014" or "2017": `dataset.year`, or (auto) the detected one."""
    year = str(options.get("year", "auto"))
    if year in PARTS:
        return year
    if year != "auto":
        raise ConfigError(f"dataset.year={options.get('year')!r}: expected auto, 2014 or 2017")
    # 2014 unless only 2017's files are there: a root that has both reads as it did before 2017
    if not _holds_any(root, "2014") and _holds_any(root, "2017"):
        return "2017"
    return "2014"


def _holds_any(root: Path, year: str) -> bool:
    return any((root / part).is_dir() or _captions_path(root, part).is_file() for part in PARTS[year])


def _captions_path(root: Path, part: str) -> Path:
    return root / "annotations" / f"captions_{part}.json"


def _layouts() -> str:
    return " or ".join(f"the {year} layout (annotations/captions_{{train,val}}{year}.json, "
                       f"{'/, '.join(parts)}/)" for year, parts in PARTS.items())


def _require_captions_file(root: Path, part: str) -> Path:
    path = _captions_path(root, part)
    if not path.is_file():
        raise DatasetLayoutError(f"coco: {path} not found ({part} captions); dataset.root must hold "
                                 f"{_layouts()}, unpacked as the download ships. {DOWNLOAD}")
    return path


def _require_karpathy_file(path: Path) -> Path:
    if not path.is_file():
        raise DatasetLayoutError(f"coco: {path} not found (Karpathy's split file, for "
                                 "dataset.split=karpathy; it ships in Karpathy's caption_datasets.zip, "
                                 "cs.stanford.edu/people/karpathy/deepimagesent/, not in COCO's zips): put "
                                 "it there, set dataset.karpathy_json=<file>, or use dataset.split=random")
    return path


@dataclass(frozen=True)
class OfficialCaptions:
    """What one release's captions files hold, both parts together."""

    paths: dict[str, Path]  # image file name -> where the image is
    names: dict[int, str]  # COCO image id -> file name
    pairs: list[tuple[str, str]]  # (file name, caption), in the files' order


def read_official_captions(root: Path, year: str) -> OfficialCaptions:
    """The captions files of `year`'s layout (an error naming both layouts if one is missing)."""
    paths: dict[str, Path] = {}
    names: dict[int, str] = {}
    pairs: list[tuple[str, str]] = []
    for part in PARTS[year]:
        part_names, part_pairs = read_captions_file(_require_captions_file(root, part))
        names.update(part_names)
        pairs += part_pairs
        for name in part_names.values():
            paths[name] = root / part / name
    return OfficialCaptions(paths, names, pairs)


def _random_split(root: Path, year: str, options: Mapping[str, Any]) -> list[ImageRecord]:
    official = read_official_captions(root, year)
    pairs = list(official.pairs)
    seed = options.get("seed", 0)
    if options.get("max_captions"):
        random.Random(seed).shuffle(pairs)
        pairs = pairs[: options["max_captions"]]
    captions: dict[str, list[str]] = defaultdict(list)
    for name, caption in pairs:
        captions[name].append(caption)
    captions = real_captions(captions, "coco", root / "annotations")
    present = sorted(name for name in captions if official.paths[name].is_file())
    if len(present) < len(captions):
        log.warning("coco: skipped %d captioned images that are not on disk", len(captions) - len(present))
    records = [ImageRecord(Path(name).stem, official.paths[name], captions[name], "train")
               for name in present]
    require_images(records, "coco", root / PARTS[year][0], root / "annotations")
    records = _subset(records, options)
    splits = random_splits(len(records), dict(options.get("split_fractions")), seed)
    return [ImageRecord(r.image_id, r.path, r.captions, s) for r, s in zip(records, splits, strict=True)]


def _karpathy_by_id(root: Path, year: str, json_path: Path) -> list[ImageRecord]:
    """Karpathy's splits over a layout whose file names are not his (2017): matched by COCO id,
    with the captions of that layout's annotations."""
    split_of_id = karpathy_splits_by_id(json_path)
    official = read_official_captions(root, year)
    split_of = {official.names[i]: split for i, split in split_of_id.items() if i in official.names}
    captions: dict[str, list[str]] = defaultdict(list)
    for name, caption in official.pairs:
        if name in split_of:
            captions[name].append(caption)
    captions = real_captions(captions, "coco", root / "annotations")
    records = [ImageRecord(Path(name).stem, official.paths[name], texts, split_of[name])
               for name, texts in captions.items() if official.paths[name].is_file()]
    if len(records) < len(split_of_id):
        log.warning("coco: skipped %d entries of %s whose image is not in the %s annotations, not on disk "
                    "or without a caption", len(split_of_id) - len(records), json_path, year)
    return require_images(records, "coco", root / PARTS[year][0], json_path)


def karpathy_splits_by_id(json_path: Path) -> dict[int, str]:
    """COCO id -> split (restval joins train) of each image entry of Karpathy's `dataset_coco.json`."""
    try:
        entries = json.loads(read_text(json_path, "coco"))["images"]
        if not isinstance(entries, list):
            raise TypeError(f"'images' is a {type(entries).__name__}, not a list")
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetFormatError(f"{json_path}: not a Karpathy split file ({error})") from error
    splits = {}
    for index, entry in enumerate(entries):
        where = f"{json_path}: image entry {index}"
        if not isinstance(entry, dict):
            raise DatasetFormatError(f"{where} is a {type(entry).__name__}, not an object; use Karpathy's "
                                     "original file (caption_datasets.zip)")
        cocoid = entry.get("cocoid")
        if isinstance(cocoid, bool) or not isinstance(cocoid, int):
            problem = "has no field" if "cocoid" not in entry else f"has a {type(cocoid).__name__} in"
            raise DatasetFormatError(f"{where} {problem} 'cocoid' (expected a whole number: the 2017 "
                                     "images are matched by it); use Karpathy's original file "
                                     "(caption_datasets.zip)")
        if entry.get("split") not in SPLIT_NAMES:
            raise DatasetFormatError(f"{where} (cocoid {cocoid}): split {entry.get('split')!r}, expected "
                                     f"one of {', '.join(SPLIT_NAMES)}")
        splits[cocoid] = SPLIT_NAMES[entry["split"]]
    return splits


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
