"""Flickr30k: Karpathy's `dataset_flickr30k.json` with images in `flickr30k-images/`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from captioner.sources.checks import require_root
from captioner.sources.karpathy import read_karpathy_split
from captioner.sources.record import ImageRecord

DOWNLOAD = ("Flickr30k images come from the University of Illinois (flickr30k-images.tar.gz); "
            "the splits from Karpathy's caption_datasets.zip (dataset_flickr30k.json).")


def load_records(root: Path, options: Mapping[str, Any]) -> list[ImageRecord]:
    root = require_root(root, "flickr30k", DOWNLOAD)
    return read_karpathy_split(root / options.get("karpathy_json", "dataset_flickr30k.json"),
                               root / options.get("images_dir", "flickr30k-images"), "flickr30k")
