"""The HDF5 features file: the only hand-off between feature extraction and training.

Layout (one file per dataset x cnn):

    /features        (N, R, C) float16, one chunk per image: the CNN grid, R = h*w regions
    /image_ids       (N,) utf-8        the dataset's own image id
    /captions        (M,) utf-8        raw caption text
    /caption_image   (M,) int32        index into /features of each caption's image
    /splits/<name>   (k,) int32        image indices of train / val / test
    attrs            schema_version, identity (dataset, cnn, weights, ...), feature_scale, ...

A file is written as `<name>.partial` and renamed when complete, so a crash never leaves a file
that looks finished; a partial file with the same identity is resumed where it stopped. The
numeric datasets carry HDF5's fletcher32 checksum per chunk, so bit rot is an error on reading,
never garbage served to training. The file's whole size is claimed when it is created, so a
full disk, a quota or a file-size limit stops an extraction before its first image; a write
refused later (an I/O error) is one error too, raised in the caller while a child process that
held the file ends alone (HDF5 cannot go on, or even exit cleanly, after a refused write).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from captioner.errors import UserError
from captioner.features.writer_process import WriterProcess, WriterProcessError
from captioner.paths import replace_durably
from captioner.sources import SPLITS, ImageRecord

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2: fletcher32 checksums on every numeric dataset; 3: weights as structured data
FLOAT16_MAX = float(np.finfo(np.float16).max)
# Room asked for beyond the file's data when it is created, for HDF5's own metadata (chunk index, attributes).
METADATA_MARGIN = 1 << 20


class FeatureFileError(UserError, ValueError):
    """A features file that is missing, unfinished, corrupt or made for another config; `reason`:
    what is wrong, without the file's name or advice (callers that give their own advice use it)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class FeatureWriteError(FeatureFileError):
    """The disk refused a write (full, over quota, over a size limit); the partial file resumes."""


class FailedWriteError(FeatureWriteError):
    """A write HDF5 attempted and the system refused: HDF5 cannot be used in that process again."""


def _numeric(file: h5py.File, name: str, data: np.ndarray) -> None:
    """A numeric dataset with a checksum per chunk (fletcher32 needs a chunked layout)."""
    file.create_dataset(name, data=data, fletcher32=len(data) > 0)  # an empty one cannot be chunked


def partial_path(path: Path) -> Path:
    return Path(f"{path}.partial")


def records_fingerprint(records: Sequence[ImageRecord]) -> str:
    """Hash of what the file depends on besides the CNN: ids, captions, splits, order, and each
    image file's size, so that images rebuilt at another size (shapes' dataset.image_size) or a
    re-encoded copy of a dataset under the same names are extracted again, not served old
    features. (Sizes, not contents: reading every image to reuse a file would cost what
    extracting it costs.)"""
    digest = hashlib.sha256()
    for r in records:
        try:
            size = os.stat(r.path).st_size
        except OSError:  # not there: extraction skips and lists it
            size = None
        digest.update(json.dumps([r.image_id, r.split, r.captions, size]).encode())
    return digest.hexdigest()[:16]


class FeatureFileWriter:
    """Writes features batch by batch into `<path>.partial`; `finish()` renames it into place.

    The HDF5 file is written by a child process (`WriterProcess`): after a write the system
    refuses (a size limit, a quota, an I/O error) HDF5 would crash this process at exit, while
    the child can end without touching it. Such an error comes back as one `FeatureWriteError`
    naming the file and the cause.
    """

    def __init__(self, path: Path, records: Sequence[ImageRecord], regions: int, channels: int,
                 identity: dict[str, Any]):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.images_done = 0
        self._process = WriterProcess(_HDF5FeatureWriter, self.path, records, regions, channels, identity,
                                      fatal=(FailedWriteError, OSError, RuntimeError), name="features writer")
        self.images_done = self._call("count_done")

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return self._process.call(method, *args)
        except WriterProcessError as error:
            raise FeatureWriteError(f"{self.partial}: {error}; rerun: extraction resumes at image "
                                    f"{self.images_done}") from error

    def set_attrs(self, **attrs: Any) -> None:
        self._call("set_attrs", attrs)

    def attr(self, key: str, default: Any = None) -> Any:
        return self._call("attr", key, default)

    def skip(self, index: int, reason: str) -> None:
        """Leave image `index` out of every split (its features stay zero), saying why."""
        self._call("skip", index, reason)

    def write(self, start: int, features: np.ndarray) -> None:
        """Store images [start, start+len) (float32 in, float16 on disk) and mark them done."""
        self._call("write", start, features)
        self.images_done = start + len(features)

    def finish(self, **attrs: Any) -> Path:
        """Complete the file (every image written) and rename it into place."""
        return self._call("finish", attrs)

    def close(self) -> None:
        """Close the file where it stands (after `finish`, or after an error: nothing to do).
        Never raises: it runs in `finally`, where the error being raised is the one to report."""
        if self._process.alive:
            try:
                self._call("close")
            except (FeatureFileError, OSError) as error:
                log.warning("closing %s: %s", self.partial, error)


class _HDF5FeatureWriter:
    """`FeatureFileWriter`'s work, done in its child process."""

    def __init__(self, path: Path, records: Sequence[ImageRecord], regions: int, channels: int,
                 identity: dict[str, Any]):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.identity = {**identity, "schema_version": SCHEMA_VERSION,
                         "records": records_fingerprint(records)}
        self.num_images = len(records)
        if self.partial.exists() and not self._resumable(regions, channels):
            self.partial.unlink()
        if not self.partial.exists():
            self._create(records, regions, channels)
        self.file = h5py.File(self.partial, "r+")
        # One handle for the whole write: a write error then surfaces in `write`, not later when a
        # temporary handle is garbage-collected (where h5py can only print it).
        self.features = self.file["features"]
        self.images_done = int(self.file.attrs["images_done"])

    def _resumable(self, regions: int, channels: int) -> bool:
        try:
            with h5py.File(self.partial, "r") as f:
                return (json.loads(f.attrs["identity"]) == self.identity
                        and f["features"].shape == (self.num_images, regions, channels))
        except (OSError, KeyError, ValueError):
            return False

    def _create(self, records: Sequence[ImageRecord], regions: int, channels: int) -> None:
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        free = self._free_bytes()
        metadata = sum(len(c.encode()) + 32 for r in records for c in r.captions) + 64 * len(records)
        needed = metadata + len(records) * regions * channels * 2 + METADATA_MARGIN
        if free < needed:
            raise FeatureWriteError(
                f"no space left on the disk of {self.partial.parent} for {self.partial}: the features "
                f"need about {_size(needed)} and {_size(free)} is free; free space (or set "
                "data_root=<a disk with room>) and rerun")
        try:
            self._write_header(records, regions, channels)
        except (OSError, RuntimeError) as error:  # h5py raises either for a refused write
            # Nothing was extracted yet: a file that cannot be whole only takes the space back.
            self.partial.unlink(missing_ok=True)
            problem, advice = self._refusal(error, free)
            raise FailedWriteError(f"{problem} while creating {self.partial} (about {_size(needed)}); "
                                   f"{advice} and rerun") from error

    def _write_header(self, records: Sequence[ImageRecord], regions: int, channels: int) -> None:
        """Everything but the features: ids, captions, splits, identity; no image done yet."""
        text = h5py.string_dtype("utf-8")
        with h5py.File(self.partial, "w") as f:
            # Every chunk is allocated (zeros) now, so the file never grows during extraction: a
            # size limit, a quota or a full disk stops it here, before any image is computed,
            # and later batches overwrite chunks in place.
            early = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            early.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            f.create_dataset("features", shape=(len(records), regions, channels), dtype="float16",
                             chunks=(1, regions, channels), fletcher32=True, fillvalue=0, dcpl=early)
            f.create_dataset("image_ids", data=[r.image_id for r in records], dtype=text)
            captions = [c for r in records for c in r.captions]
            owner = [i for i, r in enumerate(records) for _ in r.captions]
            f.create_dataset("captions", data=captions, dtype=text)
            _numeric(f, "caption_image", np.asarray(owner, dtype=np.int32))
            for split in SPLITS:
                members = [i for i, r in enumerate(records) if r.split == split]
                _numeric(f, f"splits/{split}", np.asarray(members, dtype=np.int32))
            f.attrs["identity"] = json.dumps(self.identity, sort_keys=True)
            f.attrs["images_done"] = 0

    def count_done(self) -> int:
        return self.images_done

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        try:
            for key, value in attrs.items():
                self.file.attrs[key] = json.dumps(value) if isinstance(value, dict) else value
        except (OSError, RuntimeError) as error:  # h5py raises either for a refused write
            raise self._write_error(error, self._free_bytes()) from error

    def attr(self, key: str, default: Any = None) -> Any:
        return self.file.attrs.get(key, default)

    def skip(self, index: int, reason: str) -> None:
        skipped = json.loads(self.file.attrs.get("skipped_images", "{}"))
        skipped[str(index)] = reason
        self.set_attrs({"skipped_images": json.dumps(skipped)})

    def write(self, start: int, features: np.ndarray) -> None:
        if start != self.images_done:
            raise ValueError(f"{self.partial}: batches must arrive in order (expected image "
                             f"{self.images_done}, got {start})")
        peak = float(np.abs(features).max()) if features.size else 0.0
        if not np.isfinite(peak) or peak >= FLOAT16_MAX:
            raise FeatureFileError(
                f"{self.partial}: features of images {start}..{start + len(features) - 1} are not "
                f"finite in float16 (max |x| = {peak:.3g}): NaN or inf comes from a broken CNN or "
                "weights file, a large finite value needs scaling")
        half = features.astype(np.float16)
        try:
            self.features[start:start + len(features)] = half
            # The features reach the disk before the count that vouches for them; after a crash
            # the count may lag, never lead (the chunks were written early, as zeros with valid checksums).
            self.file.flush()
            os.fsync(self.file.id.get_vfd_handle())
            self.file.attrs["images_done"] = start + len(features)
            self.file.flush()
        except (OSError, RuntimeError) as error:  # h5py raises either for a refused write
            raise self._write_error(error, self._free_bytes()) from error
        self.images_done = start + len(features)

    def _free_bytes(self) -> int:
        return shutil.disk_usage(self.partial.parent).free

    def _refusal(self, error: Exception, free: int) -> tuple[str, str]:
        """Why the system refused a write and what to do, in words (h5py's message carries the
        errno's text, not always the errno)."""
        words = " ".join(str(error).split())
        code = getattr(error, "errno", None)
        elsewhere = "set data_root=<a disk with room>"
        if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in words or "quota" in words:
            return (f"no space left on the disk of {self.partial.parent} ({_size(free)} free, or over "
                    "quota)", f"free space (or {elsewhere})")
        if code == errno.EFBIG or "File too large" in words:
            return ("the file reached the size limit of this process or file system",
                    f"raise the limit (`ulimit -f`) or {elsewhere} whose file system allows larger files")
        return f"the disk refused a write ({words[:200]})", f"check the disk (or {elsewhere})"

    def _write_error(self, error: Exception, free: int) -> FailedWriteError:
        """A write HDF5 attempted after the file was made (space was claimed then: an I/O error,
        a file system gone read-only): what was written before it is kept if the file survived."""
        problem, advice = self._refusal(error, free)
        return FailedWriteError(
            f"{problem} while writing {self.partial} (image {self.images_done} of {self.num_images}); "
            f"{advice} and rerun: extraction resumes at image {self.images_done}, or starts over if "
            "the failed write damaged the file")

    def finish(self, attrs: dict[str, Any]) -> Path:
        if self.images_done != self.num_images:
            raise FeatureFileError(f"{self.partial}: only {self.images_done} of {self.num_images} "
                                   "images written")
        skipped = {int(i) for i in json.loads(self.file.attrs.get("skipped_images", "{}"))}
        try:
            if skipped:
                for name in list(self.file["splits"]):
                    kept = [i for i in self.file[f"splits/{name}"][:] if int(i) not in skipped]
                    del self.file[f"splits/{name}"]
                    _numeric(self.file, f"splits/{name}", np.asarray(kept, dtype=np.int32))
            self.set_attrs({**attrs, "complete": True, "skipped_count": len(skipped)})
            self.file.close()
        except (OSError, RuntimeError) as error:  # h5py raises either for a refused write
            raise self._write_error(error, self._free_bytes()) from error
        replace_durably(self.partial, self.path)
        return self.path

    def close(self) -> None:
        if self.file.id.valid:
            try:
                self.file.close()
            except OSError as error:  # after a failed write: that error is the one to report
                log.debug("closing %s after a failed write: %s", self.partial, error)


class FeatureFile:
    """Read side: metadata on construction, features lazily (one handle per process)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.exists():
            hint = " (an unfinished extraction is still .partial)" if partial_path(self.path).exists() else ""
            raise FeatureFileError(f"{self.path}: features file not found{hint}", f"not found{hint}")
        try:
            with h5py.File(self.path, "r") as f:
                if not f.attrs.get("complete", False):
                    raise FeatureFileError(f"{self.path}: features file is not complete; delete it "
                                           "and run again to re-extract", "not complete")
                self.attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
                self.identity = json.loads(self.attrs["identity"])
                self.shape = tuple(f["features"].shape)
                self.image_ids = [s.decode() if isinstance(s, bytes) else s for s in f["image_ids"][:]]
                self.captions = [s.decode() if isinstance(s, bytes) else s for s in f["captions"][:]]
                self.caption_image = f["caption_image"][:].astype(np.int64)
                self.splits = {name: f[f"splits/{name}"][:].astype(np.int64) for name in f["splits"]}
                self.skipped = {int(i): why for i, why in
                                json.loads(f.attrs.get("skipped_images", "{}")).items()}
        except FeatureFileError:
            raise
        except (OSError, KeyError, ValueError) as error:
            raise FeatureFileError(f"{self.path}: not a readable captioner features file ({error}); "
                                   "delete it and run again to re-extract",
                                   f"not readable: {error}") from error
        self._handle: h5py.File | None = None
        self._pid: int | None = None
        self._memory: np.ndarray | None = None

    @property
    def num_images(self) -> int:
        return self.shape[0]

    @property
    def regions(self) -> int:
        return self.shape[1]

    @property
    def channels(self) -> int:
        return self.shape[2]

    def cnn_record(self) -> dict[str, Any]:
        """How the features were made (CNN, weights, input size, normalisation, scaling), as plain
        data: stored in every checkpoint so the same CNN can be rebuilt for new images."""
        keys = ("grid", "input_size", "mean", "std", "feature_scale", "random_init_calibration",
                "calibration_batch_size", "weights_path", "top_grid", "top_channels", "top_scale")
        record = {**self.identity, **{k: self.attrs[k] for k in keys if k in self.attrs}}
        if "calibration_paths" in self.attrs:
            record["calibration_paths"] = json.loads(self.attrs["calibration_paths"])
        return record

    def split_captions(self, split: str) -> np.ndarray:
        """Indices into /captions of every caption of an image in `split`."""
        return np.flatnonzero(np.isin(self.caption_image, self.splits[split]))

    def references(self, split: str) -> dict[int, list[str]]:
        """Image index -> raw reference captions, for every image of `split`."""
        refs: dict[int, list[str]] = {}
        for c in self.split_captions(split):
            refs.setdefault(int(self.caption_image[c]), []).append(self.captions[c])
        return refs

    def verify(self, block: int = 256) -> None:
        """Read every image's features once: each chunk's checksum and every value's finiteness.
        Damage is a FeatureFileError naming the file and the images; progress goes to the log."""
        last_report = began = time.monotonic()
        for start in range(0, self.num_images, block):
            self._checked_read(np.arange(start, min(start + block, self.num_images)))
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                log.info("verifying %s: %d/%d images, %.0f s", self.path, start + block, self.num_images,
                         last_report - began)
        self.release()

    def load_into_memory(self) -> None:
        self._memory = self._checked_read(slice(None))
        self.release()

    def release(self) -> None:
        """Close this process's handle after a whole read: a DataLoader worker forked later opens
        its own, and HDF5 state inherited from an open parent handle is not safe to share."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = self._pid = None

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Features of `indices` in the given order, with one sorted read from disk."""
        indices = np.asarray(indices, dtype=np.int64)
        if self._memory is not None:
            return self._memory[indices]
        unique, inverse = np.unique(indices, return_inverse=True)
        return self._checked_read(unique)[inverse]

    def _checked_read(self, selection: slice | np.ndarray) -> np.ndarray:
        """Features as stored, or an error naming the file when they are unreadable or not finite
        (a broken CNN or conversion writes NaN with valid checksums: it must not train a NaN model)."""
        try:
            features = self._features()[selection]
        except OSError as error:  # fletcher32 mismatch: "filter returned failure during read"
            what = "some images"
            if not isinstance(selection, slice):  # an error path: find which, one by one
                bad = [int(i) for i in selection if not self._readable(int(i))]
                what = f"images {', '.join(map(str, bad[:5]))}{' ...' if len(bad) > 5 else ''}"
            raise FeatureFileError(
                f"{self.path}: the features of {what} are corrupt on disk (checksum mismatch or read "
                f"error: {' '.join(str(error).split())}); delete {self.path} and run again to "
                "re-extract it, and check the disk") from error
        finite = _finite_rows(features)
        if not finite.all():
            rows = np.arange(self.num_images)[selection] if isinstance(selection, slice) else selection
            bad = [int(i) for i in np.asarray(rows)[~finite]]
            raise FeatureFileError(
                f"{self.path}: the features of {len(bad)} image(s) are not finite (NaN or inf; images "
                f"{', '.join(map(str, bad[:5]))}{' ...' if len(bad) > 5 else ''}): the CNN or a "
                f"conversion wrote them so; delete {self.path} and extract again")
        return features

    def _readable(self, index: int) -> bool:
        try:
            self._features()[index]
        except OSError:
            return False
        return True

    def _features(self) -> h5py.Dataset:
        # h5py handles do not survive fork/pickle: each worker process opens its own.
        if self._handle is None or self._pid != os.getpid():
            handle = h5py.File(self.path, "r")
            found = _attr_value(handle.attrs.get("identity"))
            if found != self.attrs["identity"]:
                # the file was replaced since this run read it (a damaged default file rebuilt, a
                # features_path= two configs share, another copy put there): its features would be
                # read as this run's
                handle.close()
                raise FeatureFileError(
                    f"{self.path} was replaced since this run read it, by a file made for other "
                    f"settings ({found}): runs that need other features and run at once must not "
                    "share one features_path=")
            self._handle, self._pid = handle, os.getpid()
        return self._handle["features"]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"], state["_pid"] = None, None
        return state


def _finite_rows(features: np.ndarray, block: int = 1024) -> np.ndarray:
    """Per image: are all its values finite? In blocks, so a whole file's check stays small."""
    return np.concatenate([np.isfinite(features[i:i + block]).reshape(len(features[i:i + block]), -1).all(1)
                           for i in range(0, len(features), block)] or [np.ones(0, dtype=bool)])


def _attr_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _size(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"
