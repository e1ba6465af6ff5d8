"""Paths from the config, taken relative to where the user started the command, and files
written whole."""

from __future__ import annotations

import os
from pathlib import Path


def absolute(path: str | os.PathLike, base_dir: Path) -> Path:
    """`path` with `~` expanded; a relative path is taken from `base_dir`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def default_features_path(data_root: Path, dataset: str, cnn: str, trainable_blocks: int = 0,
                          key: str | None = None) -> Path:
    """Where the features of (dataset, cnn) live unless `features_path=` names a file; with a
    trainable CNN top they are another file (the activations entering its last blocks). `key`
    tells apart configs of one CNN that give other features (weights, input size; see
    features/cache.py); None: the name files had before they carried it."""
    top = f"-top{trainable_blocks}" if trainable_blocks else ""
    tail = f"-{key}" if key else ""
    return Path(data_root) / "features" / f"{dataset}-{cnn}{top}{tail}.h5"


def write_atomically(path: Path, text: str) -> None:
    """Write `path` through a staging file and a rename: readers never see half a file."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(text)
    os.replace(staging, path)
