"""Paths from the config, taken relative to where the user started the command, and files
written whole."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
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
    replace_durably(staging, path)


def sync_to_disk(path: Path) -> None:
    """Wait until the file (or folder) `path` is on the disk, not only in the page cache."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_durably(staging: Path, path: Path) -> None:
    """`os.replace(staging, path)`, made to last a crash or a power cut, not only a killed process:
    the staging file's data reach the disk before the rename, and the rename before this returns.
    Without the first, a file system may commit the rename first and leave `path` empty."""
    sync_to_disk(staging)
    os.replace(staging, path)
    with contextlib.suppress(OSError):  # some file systems refuse to sync a folder; the file is on disk
        sync_to_disk(Path(path).parent)


@contextlib.contextmanager
def written_as_a_set(folder: Path, last: str) -> Iterator[Path]:
    """A staging folder for files that belong together (a report and the charts it shows). Once the
    block ends without an error they replace `folder`'s files of the same names, `last` (the file
    that names the others) last; an error leaves `folder` as it was. Files only, no subfolders."""
    folder = Path(folder)
    for left in folder.glob(f".{last}.set.partial-*"):  # sets earlier, killed writers left
        if not process_alive(int(left.name.rsplit("-", 1)[1])):
            shutil.rmtree(left, ignore_errors=True)
    staging = folder / f".{last}.set.partial-{os.getpid()}"  # its own: two writers at once keep apart
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for name in sorted((p.name for p in staging.iterdir()), key=lambda name: name == last):
        sync_to_disk(staging / name)
        os.replace(staging / name, folder / name)
    with contextlib.suppress(OSError):
        sync_to_disk(folder)
    staging.rmdir()


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine is alive (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
