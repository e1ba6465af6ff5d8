"""Paths from the config, taken relative to where the user started the command, and files
written whole."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import socket
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
    """Write `path` through a staging file and a rename: readers never see half a file. The staging
    file is this writer's own (`staging_path`), so two writers of `path` at once (a requeued job
    beside the old one, a double launch) do not take each other's: each renames its whole file and
    the last one wins. A failed write leaves `path` as it was and removes its staging file."""
    path = Path(path)
    with staged(path) as staging:
        staging.write_text(text, encoding="utf-8")  # whatever the locale says (pages declare utf-8)
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
def staged(path: Path, clean_up: bool = True) -> Iterator[Path]:
    """This writer's staging file for `path` (`staging_path`), for the block to write and rename
    into place; removed if the block fails. After a write that succeeded (`clean_up`), the staging
    files of `path` that killed writers of this machine left are removed: a look through the
    folder, which a writer of many files in one folder (thumbnails) leaves to its own end."""
    path = Path(path)
    staging = staging_path(path)
    try:
        yield staging
    finally:  # gone after the rename; still there if the block failed, before or after writing
        with contextlib.suppress(OSError):  # never in place of the block's own error
            staging.unlink(missing_ok=True)
    if clean_up:
        remove_stale_staging(path.parent, f".{path.name}.partial-")


def staging_path(path: Path) -> Path:
    """Where this write stages `path`: `.{name}.partial-{host}-{pid}.{n}` beside it, `n` counting
    this process's writes. Two writers of one file, in threads or processes of this machine or of
    another one sharing the file system, stage apart."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial-{_writer()}")


_writes = itertools.count()


def _writer() -> str:
    """This write, as staging names carry it: `{host}-{pid}.{n}`."""
    return f"{_host()}-{os.getpid()}.{next(_writes)}"


def _host() -> str:
    """This machine's name, as staging names carry it (only characters safe in a file name)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "unknown"


def remove_stale_staging(folder: Path, prefix: str = ".", legacy_pid_only: bool = False) -> None:
    """Remove the staging files (or folders) `...partial-{host}-{pid}.{n}` in `folder` whose names
    begin with `prefix` (one target's: `.{name}.partial-`; ".": every target's) and whose writer is
    a dead process of this machine: a killed writer's, which no later write would reuse. Another
    machine's, or a live process's, are left alone. `legacy_pid_only`: also `{prefix}{pid}`, the
    names of versions that did not write the host (taken for this machine's, as they were then)."""
    own = f"partial-{_host()}-"
    try:
        names = [p.name for p in Path(folder).iterdir()]
    except OSError:
        return
    for name in names:
        _, marked, rest = name.rpartition(own)
        # the rest holds no "-": another host whose name begins like this one's never matches
        if marked and name.startswith(prefix) and (found := re.fullmatch(r"(\d+)(?:\.\d+)?", rest)):
            pid = int(found[1])
        elif legacy_pid_only and name.startswith(prefix) and name[len(prefix):].isdigit():
            pid = int(name[len(prefix):])
        else:
            continue
        if pid == os.getpid() or process_alive(pid):
            continue
        left = Path(folder) / name
        if left.is_dir() and not left.is_symlink():
            shutil.rmtree(left, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove: the write stands
                left.unlink()


@contextlib.contextmanager
def written_as_a_set(folder: Path, last: str) -> Iterator[Path]:
    """A staging folder for files that belong together (a report and the charts it shows). Once the
    block ends without an error they replace `folder`'s files of the same names, `last` (the file
    that names the others) last; an error leaves `folder` as it was. Files only, no subfolders."""
    folder = Path(folder)
    # sets earlier, killed writers left (older versions named them without the host)
    remove_stale_staging(folder, f".{last}.set.partial-", legacy_pid_only=True)
    staging = folder / f".{last}.set.partial-{_writer()}"  # its own: two writers at once keep apart
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
