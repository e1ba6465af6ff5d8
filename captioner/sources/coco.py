"""MS-COCO 2014 captions.

`annotations/captions_{train,val}2014.json` list the images (`id`, `file_name`) and captions
(`image_id`, `caption`); images live in `train2014/` and `val2014/`. Splits:

- `karpathy`: Karpathy's `dataset_coco.json` (train + restval -> train, 5000 val, 5000 test);
- `random`: a seeded shuffle of the images cut by `split_fractions`.

`max_captions` reproduces the seed report's subset: shuffle all captions with `seed`, keep the
first N and the images they belong to. `max_images` then keeps a seeded sample of images.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from captioner.sources.checks import require_file, require_root
from captioner.sources.karpathy import read_karpathy_split
from captioner.sources.record import ImageRecord
from captioner.sources.splits import random_splits

log = logging.getLogger(__name__)

DOWNLOAD = ("MS-COCO 2014 comes from cocodataset.org: train2014.zip, val2014.zip and "
            "annotations_trainval2014.zip (Karpathy's dataset_coco.json for split=karpathy).")
PARTS = ("train2014", "val2014")


def load_records(root: Path, options: Any) -> list[ImageRecord]:
    root = require_root(root, "coco", DOWNLOAD)
    split = options.get("split", "random")
    if split == "karpathy":
        records = read_karpathy_split(root / options.get("karpathy_json", "dataset_coco.json"), root, "coco")
        return _subset(records, options)
    if split != "random":
        raise ValueError(f"dataset.split={split!r}: expected karpathy or random")
    captions: dict[str, list[str]] = defaultdict(list)
    paths: dict[str, Path] = {}
    pairs = []
    for part in PARTS:
        file = require_file(root / "annotations" / f"captions_{part}.json", "coco", f"{part} captions")
        try:
            content = json.loads(file.read_text(encoding="utf-8"))
            names = {image["id"]: image["file_name"] for image in content["images"]}
            pairs += [(names[a["image_id"]], a["caption"].strip()) for a in content["annotations"]]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{file}: not a COCO captions file ({error})") from error
        for name in names.values():
            paths[name] = root / part / name
    seed = options.get("seed", 0)
    if options.get("max_captions"):
        random.Random(seed).shuffle(pairs)
        pairs = pairs[: options.max_captions]
    for name, caption in pairs:
        captions[name].append(caption)
    present = sorted(name for name in captions if paths[name].is_file())
    if len(present) < len(captions):
        log.warning("coco: skipped %d captioned images that are not on disk", len(captions) - len(present))
    records = [ImageRecord(Path(name).stem, paths[name], captions[name], "train") for name in present]
    records = _subset(records, options)
    splits = random_splits(len(records), dict(options.get("split_fractions")), seed)
    return [ImageRecord(r.image_id, r.path, r.captions, s) for r, s in zip(records, splits, strict=True)]


def _subset(records: list[ImageRecord], options: Any) -> list[ImageRecord]:
    limit = options.get("max_images")
    if not limit or limit >= len(records):
        return records
    chosen = sorted(random.Random(options.get("seed", 0)).sample(range(len(records)), limit))
    return [records[i] for i in chosen]
