"""Checks every dataset reader makes before parsing, with errors that say what to do."""

from __future__ import annotations

from pathlib import Path

from captioner.errors import UserError


class DatasetLayoutError(UserError, FileNotFoundError):
    """The dataset's folder is missing or does not hold the files its layout needs."""


class DatasetFormatError(UserError, ValueError):
    """A dataset file is there but does not hold what its format promises."""


class DatasetRootTakenError(UserError, FileExistsError):
    """A generated dataset's folder holds files the generator did not write."""


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


def require_images(records: list, dataset: str, images_dir: Path, listed_in: Path,
                   option: str | None = None) -> list:
    """`records`, or an error saying which image folder was expected and how to fix it if none.

    `option` is the dataset key that names the image folder, if it has one."""
    if records:
        return records
    images_dir = Path(images_dir)
    if images_dir.is_dir():
        problem = f"none of the images named in {listed_in} is in {images_dir}"
    else:
        problem = f"the image folder {images_dir} does not exist ({listed_in} names the images in it)"
    fix = (f"set dataset.{option}=<folder> (relative to dataset.root) to where they are" if option
           else "point dataset.root at the folder that holds them")
    raise DatasetLayoutError(f"{dataset}: {problem}. Unpack the images into {images_dir}, or {fix}")
