"""Paths from the config, taken relative to where the user started the command."""

from __future__ import annotations

import os
from pathlib import Path


def absolute(path: str | os.PathLike, base_dir: Path) -> Path:
    """`path` with `~` expanded; a relative path is taken from `base_dir`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path
