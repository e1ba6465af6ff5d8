"""Checks every dataset reader makes before parsing, with errors that say what to do."""

from __future__ import annotations

from pathlib import Path


class DatasetLayoutError(FileNotFoundError):
    """The dataset's folder is missing or does not hold the files its layout needs."""


def require_root(root: Path, dataset: str, download_hint: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(
            f"{dataset}: data directory {root} does not exist. {download_hint} "
            f"Unpack it there, or point dataset.root=<folder> at your copy.")
    return root


def require_file(path: Path, dataset: str, what: str) -> Path:
    if not Path(path).is_file():
        raise DatasetLayoutError(f"{dataset}: {path} not found ({what}); check dataset.root and "
                                 "that the download was unpacked as it ships")
    return Path(path)
