"""Flickr30k: Karpathy's `dataset_flickr30k.json` with images in `flickr30k-images/`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from captioner.sources.checks import DatasetLayoutError, require_root
from captioner.sources.karpathy import read_karpathy_split
from captioner.sources.record import ImageRecord

DOWNLOAD = ("Flickr30k images come from the University of Illinois (flickr30k-images.tar.gz); "
            "the splits with their captions from Karpathy's caption_datasets.zip "
            "(cs.stanford.edu/people/karpathy/deepimagesent/), which holds dataset_flickr30k.json.")


def load_records(root: Path, options: Mapping[str, Any]) -> list[ImageRecord]:
    """Records of every image of Karpathy's file found in the images folder, split as he split them."""
    root = require_root(root, "flickr30k", DOWNLOAD)
    split_file = _require_split_file(root / options.get("karpathy_json", "dataset_flickr30k.json"))
    return read_karpathy_split(split_file, root / options.get("images_dir", "flickr30k-images"), "flickr30k")


def _require_split_file(path: Path) -> Path:
    # The captions are in Karpathy's file, not in the images' archive: say where it comes from.
    if not path.is_file():
        raise DatasetLayoutError(f"flickr30k: {path} not found (Karpathy's split file, with the captions; "
                                 "neither flickr30k-images.tar.gz nor flickr30k.tar.gz ships it). "
                                 f"{DOWNLOAD} Unpack it into dataset.root, or set "
                                 "dataset.karpathy_json=<file>.")
    return path
