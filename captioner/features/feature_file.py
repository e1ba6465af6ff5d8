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
never garbage served to training. A disk that fills up stops the extraction before HDF5 is
left with a failed write, so the partial file stays resumable.
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
from captioner.sources import SPLITS, ImageRecord

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2: fletcher32 checksums on every numeric dataset; 3: weights as structured data
FLOAT16_MAX = float(np.finfo(np.float16).max)
# Room kept free beyond each batch for HDF5's own metadata (chunk index, attributes).
METADATA_MARGIN = 1 << 20


class FeatureFileError(UserError, ValueError):
    """A features file that is missing, unfinished, corrupt or made for another config."""


class FeatureWriteError(FeatureFileError):
    """The disk refused a write (full, over quota, over a size limit); the partial file resumes."""


def _numeric(file: h5py.File, name: str, data: np.ndarray) -> None:
    """A numeric dataset with a checksum per chunk (fletcher32 needs a chunked layout)."""
    file.create_dataset(name, data=data, fletcher32=len(data) > 0)  # an empty one cannot be chunked


def partial_path(path: Path) -> Path:
    return Path(f"{path}.partial")


def records_fingerprint(records: Sequence[ImageRecord]) -> str:
    """Hash of what the file's non-feature content depends on: ids, captions, splits, order."""
    digest = hashlib.sha256()
    for r in records:
        digest.update(json.dumps([r.image_id, r.split, r.captions]).encode())
    return digest.hexdigest()[:16]


class FeatureFileWriter:
    """Writes features batch by batch into `<path>.partial`; `finish()` renames it into place."""

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
        if free < metadata + METADATA_MARGIN:
            raise FeatureWriteError(
                f"no space left on the disk of {self.partial.parent} ({_size(free)} free) to start "
                f"writing {self.partial} (captions and index: about {_size(metadata)}); free space "
                "(or set data_root=<a disk with room>) and rerun")
        features = len(records) * regions * channels * 2
        if free < metadata + features + METADATA_MARGIN:
            log.warning("%s needs about %s and %s is free on its disk: extraction will stop when the "
                        "disk is full (free space and rerun to resume)", self.path,
                        _size(metadata + features), _size(free))
        text = h5py.string_dtype("utf-8")
        with h5py.File(self.partial, "w") as f:
            f.create_dataset("features", shape=(len(records), regions, channels), dtype="float16",
                             chunks=(1, regions, channels), fletcher32=True)
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

    def set_attrs(self, **attrs: Any) -> None:
        for key, value in attrs.items():
            self.file.attrs[key] = json.dumps(value) if isinstance(value, dict) else value

    def attr(self, key: str, default: Any = None) -> Any:
        return self.file.attrs.get(key, default)

    def skip(self, index: int, reason: str) -> None:
        """Leave image `index` out of every split (its features stay zero), saying why."""
        skipped = json.loads(self.file.attrs.get("skipped_images", "{}"))
        skipped[str(index)] = reason
        self.file.attrs["skipped_images"] = json.dumps(skipped)

    def write(self, start: int, features: np.ndarray) -> None:
        """Store images [start, start+len) (float32 in, float16 on disk) and mark them done."""
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
        self._require_space(half.nbytes)
        try:
            self.features[start:start + len(features)] = half
            self.file.flush()  # the features reach the disk before the count that vouches for them
            self.file.attrs["images_done"] = start + len(features)
            self.file.flush()
        except OSError as error:
            raise self._write_error(error, self._free_bytes()) from error
        self.images_done = start + len(features)

    def _free_bytes(self) -> int:
        return shutil.disk_usage(self.partial.parent).free

    def _require_space(self, batch_bytes: int) -> None:
        """Stop before the disk is full: a write HDF5 cannot finish leaves its file (and the
        library, at exit) in a state nothing recovers from cleanly."""
        free = self._free_bytes()
        if free < batch_bytes + METADATA_MARGIN:
            raise self._write_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), free)

    def _write_error(self, error: OSError, free: int) -> FeatureWriteError:
        left = (self.num_images - self.images_done) * int(np.prod(self.features.shape[1:])) * 2
        where = (f"while writing {self.partial} (image {self.images_done} of {self.num_images}, "
                 f"about {_size(left)} still to write)")
        if error.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(error):
            problem = f"no space left on the disk of {self.partial.parent} ({_size(free)} free)"
        elif error.errno == errno.EFBIG:
            problem = "the file reached the size limit of this process or file system"
        else:
            problem = f"the disk refused a write ({' '.join(str(error).split())[:200]})"
        return FeatureWriteError(f"{problem} {where}; free space (or set data_root=<a disk with room>) and "
                                 f"rerun: extraction resumes at image {self.images_done}")

    def finish(self, **attrs: Any) -> Path:
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
            self.set_attrs(complete=True, skipped_count=len(skipped), **attrs)
            self.file.close()
        except OSError as error:
            raise self._write_error(error, self._free_bytes()) from error
        os.replace(self.partial, self.path)
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
            raise FeatureFileError(f"{self.path}: features file not found{hint}")
        try:
            with h5py.File(self.path, "r") as f:
                if not f.attrs.get("complete", False):
                    raise FeatureFileError(f"{self.path}: features file is not complete; delete it "
                                           "and run again to re-extract")
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
                                   "delete it and run again to re-extract") from error
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
                "calibration_batch_size", "weights_path")
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

    def load_into_memory(self) -> None:
        self._memory = self._checked_read(slice(None))

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
            self._handle = h5py.File(self.path, "r")
            self._pid = os.getpid()
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
