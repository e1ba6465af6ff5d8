"""The features cache: reuse the file for (dataset, cnn) when it matches the config, else extract it.

Each config of a CNN that gives other features (weights, input size, normalisation, a trainable
top) has its own default file, `<dataset>-<cnn>[-topN]-<key>.h5` with `key` a hash of those
settings: a sweep over them, in parallel or in turns, extracts each file once instead of
rebuilding one shared file for every run. Other records under one config (another
`dataset.num_images` or `max_captions`, other splits, images changed on disk) never replace a
complete file that runs may be reading or evaluating on: they get a file of their own beside it,
`<...>-<key>-records-<hash>.h5`. Only a damaged or outdated file is rebuilt in place.
`train.py` and `python -m captioner.prepare` (features without training) both call `prepare`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from captioner.features.backbones import weights_source
from captioner.features.extraction import extract_features
from captioner.features.feature_file import SCHEMA_VERSION, FeatureFile, FeatureFileError, records_fingerprint
from captioner.paths import default_features_path
from captioner.settings import CnnSettings, RunSettings
from captioner.sources import ImageRecord, load_records

log = logging.getLogger(__name__)


def expected_identity(dataset: str, cnn: CnnSettings, records: Sequence[ImageRecord]) -> dict[str, Any]:
    """The attributes that a features file of `dataset` by `cnn` must carry to be reused."""
    return {"schema_version": SCHEMA_VERSION, **config_identity(dataset, cnn),
            "records": records_fingerprint(records)}


def config_identity(dataset: str, cnn: CnnSettings) -> dict[str, Any]:
    """What the config alone decides of a features file (the images aside)."""
    return {
        "dataset": dataset,
        "cnn": cnn.name,
        "weights": weights_source(cnn).as_dict(),
        "input_size": int(cnn.input_size),
        "normalisation": [list(cnn.mean), list(cnn.std)],
        # only when set, so every file made before trainable tops existed keeps its identity
        **({"trainable_blocks": cnn.trainable_blocks} if cnn.trainable_blocks else {}),
    }


def features_key(dataset: str, cnn: CnnSettings) -> str:
    """8 hex digits of `config_identity`'s hash: the same in every process and on every machine."""
    text = json.dumps(config_identity(dataset, cnn), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_path(data_root: Path, dataset: str, cnn: CnnSettings) -> Path:
    """The features file of (dataset, cnn) unless `features_path=` names one."""
    return default_features_path(data_root, dataset, cnn.name, cnn.trainable_blocks,
                                 features_key(dataset, cnn))


def records_path(default: Path, records_fingerprint: str) -> Path:
    """The file of these records under `default`'s config, where `default` holds other records."""
    return default.with_name(f"{default.stem}-records-{records_fingerprint[:8]}{default.suffix}")


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold `<path>.lock`, saying so when another run holds it (it is extracting the file)."""
    lock = FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another run to finish %s", path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def ensure_features(settings: RunSettings, records: Sequence[ImageRecord], data_root: Path,
                    explicit_path: Path | None = None, device: str | None = None,
                    verify: bool = False) -> Path:
    """Path of an up-to-date features file, extracting it if needed.

    The default file is this config's own (see above), beside it the files of other records; a
    file the user named with `features_path=` is never overwritten: a mismatch there is an error.
    `verify` reads a file before reusing it (every chunk's checksum, finite values): a damaged
    default file is rebuilt, a damaged named one is an error.
    """
    explicit = explicit_path is not None
    dataset, cnn = settings.dataset, settings.cnn
    path = Path(explicit_path) if explicit else default_path(data_root, dataset.name, cnn)
    identity = expected_identity(dataset.name, cnn, records)
    strict = bool(dataset.strict)
    # A complete matching file is only read: no lock, so a read-only data_root (a shared store)
    # works. Complete files appear by an atomic rename, so none is ever seen half-written.
    if path.exists() and _unusable(path, identity, strict, verify) == ({}, None):
        log.info("reusing features %s", path)
        return path
    if explicit:
        named = _extract_under_lock(path, settings, records, identity, verify, device, explicit=True)
        assert named is not None  # a named file is reused, extracted or an error
        return named
    own = records_path(path, identity["records"])
    if own.exists() and _unusable(own, identity, strict, verify) == ({}, None):
        log.info("reusing features %s", own)
        return own
    if not path.exists():
        earlier = _earlier_name(data_root, dataset.name, cnn, identity, strict, verify)
        if earlier is not None:
            return earlier
    found = _extract_under_lock(path, settings, records, identity, verify, device, keep_other_records=True)
    if found is not None:
        return found
    log.warning("%s holds this config's features of other images or captions (another dataset option, or "
                "images changed on disk): kept for the runs that read it; these records get %s. Delete "
                "files under %s that no run needs.", path, own.name, path.parent)
    return _extract_under_lock(own, settings, records, identity, verify, device)


def _extract_under_lock(path: Path, settings: RunSettings, records: Sequence[ImageRecord],
                        identity: dict[str, Any], verify: bool, device: str | None, explicit: bool = False,
                        keep_other_records: bool = False) -> Path | None:
    """`path` reused or (re-)extracted while holding its lock. `explicit`: the user named it, so it
    is never overwritten (a mismatch is an error); `keep_other_records`: None where it is a complete
    file of this config made from other records (runs may be reading it), not a rebuilt one."""
    dataset, cnn = settings.dataset, settings.cnn
    path.parent.mkdir(parents=True, exist_ok=True)
    # Runs of a sweep that need the same file wait here while the first one extracts it.
    with _exclusive(path):
        if path.exists():
            differences, damage = _unusable(path, identity, bool(dataset.strict), verify)
            if not differences and damage is None:
                log.info("reusing features %s", path)
                return path
            if explicit and (unreadable := _not_features(path)):
                # a file the user named: no advice to delete it (it may be anything)
                raise FeatureFileError(f"features_path={path}: not a captioner features file ({unreadable}); "
                                       "point features_path= at one, or drop it to use the default file")
            if explicit and differences:
                raise FeatureFileError(
                    f"{path} was made for another config ({'; '.join(differences.values())}); drop "
                    "features_path= to use the default file, or point it at a matching one")
            if explicit:
                raise FeatureFileError(f"{damage}; or drop features_path= to use the default file")
            if keep_other_records and set(differences) == {"records"}:
                return None
            reasons = list(differences.values()) or [str(damage)]
            log.warning("features %s are stale or damaged (%s): re-extracting", path, "; ".join(reasons))
        log.info("extracting features %s (%d images, %s)", path, len(records), cnn.name)
        return extract_features(records, path, cnn, config_identity(dataset.name, cnn),
                                batch_size=cnn.batch_size, num_workers=cnn.num_workers,
                                strict=dataset.strict, device=device)


def _earlier_name(data_root: Path, dataset: str, cnn: CnnSettings, identity: dict[str, Any],
                  strict: bool, verify: bool) -> Path | None:
    """The file under the name files had before they carried their config's key, when it was
    made for this config: used where it is (renaming it could pull it from under a run reading it)."""
    earlier = default_features_path(data_root, dataset, cnn.name, cnn.trainable_blocks)
    if not earlier.exists():
        return None
    differences, damage = _unusable(earlier, identity, strict, verify)
    if not differences and damage is None:
        log.info("reusing features %s (named before file names carried their config's key)", earlier)
        return earlier
    log.warning("%s is not this config's (%s): it gets a file of its own. Delete the old one once no "
                "config needs it.", earlier, "; ".join(list(differences.values()) or [str(damage)])[:300])
    return None


def _unusable(path: Path, identity: dict[str, Any], strict: bool,
              verify: bool) -> tuple[dict[str, str], str | None]:
    """Why the file at `path` cannot serve `identity`: how it was made for another config (by
    identity key), and (`verify`, only where it was made for this one) the damage a whole read
    finds; ({}, None): it can."""
    differences = _differences(path, identity, strict)
    return differences, (_damage(path) if verify and not differences else None)


def _not_features(path: Path) -> str | None:
    """Why `path` is no features file at all (not HDF5, not complete, lacking a part), or None."""
    try:
        FeatureFile(path)
    except FeatureFileError as error:
        return error.reason
    return None


def _differences(path: Path, expected: dict[str, Any], strict: bool = False) -> dict[str, str]:
    """Why the file at `path` was made for another config, by identity key ({}: it was made for
    this one; "file": it is no complete features file); `strict` (dataset.strict): a file that
    skipped unreadable images is not one."""
    try:
        file = FeatureFile(path)
        found = file.identity
    except FeatureFileError as error:
        return {"file": str(error)}
    expected = {"trainable_blocks": 0, **expected}  # a file of a trainable top is no frozen CNN's file
    found = {"trainable_blocks": 0, **found}
    differences = {key: f"{key}: file has {found.get(key)!r}, config wants {value!r}"
                   for key, value in expected.items() if found.get(key) != value}
    if strict and file.skipped and not differences:  # (another config's or records' file: that first)
        reasons = "; ".join(map(str, file.skipped.values()))[:300]
        return {"strict": f"it skipped {len(file.skipped)} unreadable image(s) ({reasons}), and "
                          "dataset.strict=true stops at one"}
    return differences


def _damage(path: Path) -> str | None:
    """What is damaged in the file (a read of every chunk), or None."""
    file = FeatureFile(path)
    log.info("verifying %s (%d images) before reusing it", path, file.num_images)
    try:
        file.verify()
    except FeatureFileError as error:
        return str(error)
    return None


def prepare(settings: RunSettings, device: str | None = None,
            verify: bool = False) -> tuple[list[ImageRecord], Path]:
    """The dataset's records and the path of its up-to-date features file (extracted on `device`;
    `verify`: read a reused file whole first)."""
    dataset = settings.dataset
    records = load_records(dataset.source, dataset.root, dataset.options)
    path = ensure_features(settings, records, settings.data_root, settings.features_path, device, verify)
    return records, path
