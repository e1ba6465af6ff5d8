import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from captioner.features.cache import ensure_features, expected_identity, prepare
from captioner.features.feature_file import (
    FeatureFile,
    FeatureFileError,
    FeatureFileWriter,
    FeatureWriteError,
    partial_path,
)
from captioner.features.image_batches import ImageReadError
from captioner.runs.run import run
from captioner.sources import ImageRecord, load_records
from tests.conftest import TINY, command, compose_config, features_file_of, python, record_syncs, settings_of
from tests.hostile_files import decompression_bomb_png


def _records(n: int) -> list[ImageRecord]:
    splits = ["train", "train", "val", "test"]
    return [ImageRecord(f"img{i}", Path(f"/nowhere/img{i}.jpg"), [f"caption {i} a", f"caption {i} b"],
                        splits[i % 4]) for i in range(n)]


def _write(path: Path, records, features: np.ndarray, stop_after: int | None = None) -> Path | None:
    writer = FeatureFileWriter(path, records, features.shape[1], features.shape[2], {"cnn": "test"})
    try:
        for start in range(writer.images_done, len(records), 3):
            if stop_after is not None and start >= stop_after:
                return None
            writer.write(start, features[start:start + 3])
        return writer.finish(grid=[2, 2])
    finally:
        writer.close()


def test_round_trip(tmp_path):
    records = _records(10)
    features = np.random.default_rng(0).normal(size=(10, 4, 6)).astype(np.float32)
    path = _write(tmp_path / "f.h5", records, features)
    read = FeatureFile(path)
    assert read.image_ids == [r.image_id for r in records]
    assert read.captions == [c for r in records for c in r.captions]
    assert read.caption_image.tolist() == [i for i in range(10) for _ in range(2)]
    assert read.splits["val"].tolist() == [2, 6] and read.splits["test"].tolist() == [3, 7]
    np.testing.assert_allclose(read.read([7, 2, 2, 9]), features[[7, 2, 2, 9]], rtol=1e-3, atol=1e-3)
    assert read.read([7, 2]).dtype == np.float16
    read.load_into_memory()
    assert read._handle is None  # closed before any DataLoader worker is forked
    np.testing.assert_array_equal(read.read([9, 0]), features[[9, 0]].astype(np.float16))
    with h5py.File(path) as f:
        assert f["features"].chunks == (1, 4, 6)
        assert f["features"].fletcher32 and f["caption_image"].fletcher32 and f["splits/val"].fletcher32


def test_a_half_written_file_is_never_taken_for_a_finished_one(tmp_path):
    records = _records(10)
    features = np.ones((10, 4, 6), np.float32)
    path = tmp_path / "f.h5"
    assert _write(path, records, features, stop_after=6) is None  # "crash" after two batches
    assert not path.exists() and partial_path(path).exists()
    with pytest.raises(FeatureFileError, match="not found.*partial"):
        FeatureFile(path)
    # Renaming the partial file by hand does not make it complete either.
    partial_path(path).rename(tmp_path / "renamed.h5")
    with pytest.raises(FeatureFileError, match="not complete"):
        FeatureFile(tmp_path / "renamed.h5")


def test_extraction_resumes_where_it_stopped(tmp_path):
    records = _records(10)
    features = np.random.default_rng(1).normal(size=(10, 4, 6)).astype(np.float32)
    path = tmp_path / "f.h5"
    _write(path, records, features, stop_after=6)
    writer = FeatureFileWriter(path, records, 4, 6, {"cnn": "test"})
    assert writer.images_done == 6
    writer.close()
    _write(path, records, features)
    np.testing.assert_allclose(FeatureFile(path).read(range(10)), features, rtol=1e-3, atol=1e-3)
    # A partial file made for another config is not resumed but started over.
    _write(tmp_path / "g.h5", records, features, stop_after=6)
    other = FeatureFileWriter(tmp_path / "g.h5", records, 4, 6, {"cnn": "other"})
    assert other.images_done == 0
    other.close()


def test_each_batch_is_on_the_disk_before_the_count_that_vouches_for_it(tmp_path, monkeypatch):
    # The chunks exist from the start as zeros with valid checksums: after a crash, a count that
    # got to the disk before its features would serve zeros as features, silently.
    from captioner.features.feature_file import _HDF5FeatureWriter

    records = _records(7)
    writer = _HDF5FeatureWriter(tmp_path / "f.h5", records, 4, 6, {"cnn": "test"})
    events: list = []
    record_syncs(monkeypatch, events, note=lambda: int(writer.file.attrs["images_done"])
                  if writer.file.id.valid else None)
    features = np.ones((7, 4, 6), np.float32)
    for start in (0, 3, 6):
        writer.write(start, features[start:start + 3])
    path = writer.finish({})
    partial = str(partial_path(tmp_path / "f.h5"))
    assert events == [("fsync", partial, 0), ("fsync", partial, 3), ("fsync", partial, 6),
                      ("fsync", partial), ("replace", partial, str(path)), ("fsync", str(tmp_path))]


def test_values_that_overflow_float16_are_refused(tmp_path):
    records = _records(3)
    writer = FeatureFileWriter(tmp_path / "f.h5", records, 1, 2, {})
    with pytest.raises(FeatureFileError, match="not finite in float16"):
        writer.write(0, np.full((3, 1, 2), 1e6, np.float32))
    writer.close()


def test_real_extraction_writes_finite_scaled_features(tiny_cfg, shared_data_root):
    records = load_records("shapes", Path(tiny_cfg.dataset.root), tiny_cfg.dataset)
    path = ensure_features(settings_of(tiny_cfg), records, shared_data_root)
    read = FeatureFile(path)
    assert read.shape == (60, 16, 512)  # 64 px through VGG16's conv5_3: 4x4 regions
    values = read.read(range(60)).astype(np.float32)
    assert np.isfinite(values).all() and values.std() > 0
    assert read.attrs["grid"] == [4, 4] and read.attrs["feature_scale"] > 0
    assert read.attrs["random_init_calibration"] == "conv outputs standardised on 60 images"
    assert read.identity["cnn"] == "vgg16"
    assert read.identity["weights"] == {"kind": "random", "seed": 0, "calibration_images": 64}
    # Different images give different features (the grid carries the picture).
    assert np.abs(values[0] - values[1]).mean() > 1e-3
    # A second call reuses the file as it is.
    mtime = path.stat().st_mtime_ns
    assert ensure_features(settings_of(tiny_cfg), records, shared_data_root) == path
    assert path.stat().st_mtime_ns == mtime


def test_each_config_of_a_cnn_has_its_own_default_file_and_a_named_one_is_an_error(tmp_path):
    cfg = compose_config("dataset.num_images=12", data_root=tmp_path)
    records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
    path = ensure_features(settings_of(cfg), records, tmp_path)
    assert path.parent == tmp_path / "features" and path.name.startswith("shapes-vgg16-")
    other = compose_config("dataset.num_images=12", "cnn=inception_v3", "cnn.input_size=75",
                           data_root=tmp_path)
    with pytest.raises(FeatureFileError, match=rf"{path.name} was made for another config.*cnn"):
        ensure_features(settings_of(other), records, tmp_path, explicit_path=path)
    notes = tmp_path / "notes.txt"  # a file the user named by mistake: never told to delete it
    notes.write_text("not features")
    refused = rf"features_path={notes}: not a captioner features file"
    with pytest.raises(FeatureFileError, match=refused) as error:
        ensure_features(settings_of(cfg), records, tmp_path, explicit_path=notes)
    assert "delete" not in str(error.value) and notes.read_text() == "not features"
    # other random weights: a file of their own, so a sweep over them never rebuilds one file in turns
    reseeded = compose_config("dataset.num_images=12", "cnn.seed=1", data_root=tmp_path)
    second = ensure_features(settings_of(reseeded), records, tmp_path)
    assert second != path and FeatureFile(second).identity["weights"]["seed"] == 1
    written = path.stat().st_mtime_ns
    assert ensure_features(settings_of(cfg), records, tmp_path) == path  # the first is still there
    assert path.stat().st_mtime_ns == written and FeatureFile(path).identity["weights"]["seed"] == 0
    # other records under the same config: a file of their own beside it; the first is kept
    fewer = ensure_features(settings_of(cfg), records[:8], tmp_path)
    assert fewer == path.with_name(f"{path.stem}-records-{FeatureFile(fewer).identity['records'][:8]}.h5")
    assert FeatureFile(fewer).num_images == 8 and FeatureFile(path).num_images == 12
    assert path.stat().st_mtime_ns == written


def test_the_key_of_a_default_file_follows_what_changes_the_features_and_nothing_else():
    from captioner.features.cache import features_key

    def key(*overrides: str) -> str:
        cnn = settings_of(compose_config(*overrides)).cnn
        return features_key("shapes", cnn)

    base = key()
    assert len(base) == 8 and base == key()  # the same on every call: no object ids, no dict order
    assert key("cnn.batch_size=4", "cnn.num_workers=1", "dataset.num_images=12", "seed=3") == base
    for changed in ("cnn.seed=1", "cnn.input_size=96", "cnn.calibration_images=8", "cnn.mean=[0.5,0.5,0.5]"):
        assert key(changed) != base, changed
    assert features_key("other", settings_of(compose_config()).cnn) != base


def test_a_file_under_the_name_before_keys_is_used_where_it_is_if_it_is_this_configs(tmp_path, caplog):
    from captioner.paths import default_features_path

    cfg = compose_config("dataset.num_images=12", data_root=tmp_path)
    records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
    path = ensure_features(settings_of(cfg), records, tmp_path)
    earlier = default_features_path(tmp_path, "shapes", "vgg16")
    path.rename(earlier)  # as an earlier version named it
    assert ensure_features(settings_of(cfg), records, tmp_path) == earlier
    assert not path.exists()  # no second extraction
    reseeded = compose_config("dataset.num_images=12", "cnn.seed=1", data_root=tmp_path)
    with caplog.at_level(logging.WARNING):
        second = ensure_features(settings_of(reseeded), records, tmp_path)
    assert second != earlier and earlier.is_file()  # not another config's to replace
    assert f"{earlier} is not this config's (weights:" in caplog.text and "Delete the old one" in caplog.text


def test_unreadable_and_truncated_images_are_skipped_counted_and_listed(tmp_path):
    cfg = compose_config("dataset.num_images=16", data_root=tmp_path)
    records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
    garbage, truncated = records[3].path, records[9].path
    garbage.write_bytes(b"not a jpeg at all")
    truncated.write_bytes(truncated.read_bytes()[:300])
    path = ensure_features(settings_of(cfg), records, tmp_path)
    read = FeatureFile(path)
    assert sorted(read.skipped) == [3, 9]
    assert str(garbage) in read.skipped[3] and str(truncated) in read.skipped[9]
    assert read.attrs["skipped_count"] == 2
    in_splits = np.concatenate(list(read.splits.values())).tolist()
    assert sorted(in_splits) == [i for i in range(16) if i not in (3, 9)]
    assert np.isfinite(read.read(range(16)).astype(np.float32)).all()


def test_a_strict_run_of_other_records_leaves_a_file_that_skipped_images_to_its_runs(tmp_path):
    """The strict check came first: a strict run of other records met a file that skipped an image
    and rebuilt it in place, under the runs reading it, instead of making its own beside it."""
    cfg = compose_config("dataset.num_images=12", data_root=tmp_path)
    records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
    records[11].path.write_bytes(b"not a jpeg at all")
    lenient = ensure_features(settings_of(cfg), records, tmp_path)
    made = lenient.stat().st_mtime_ns
    cfg.dataset.strict = True
    strict = ensure_features(settings_of(cfg), records[:11], tmp_path)  # without the unreadable one
    assert strict != lenient and FeatureFile(strict).num_images == 11 and not FeatureFile(strict).skipped
    assert lenient.stat().st_mtime_ns == made and sorted(FeatureFile(lenient).skipped) == [11]


# Hostile input and a hostile machine: bit rot, a bomb among the images, a full or read-only disk.

def _rot(path: Path, image: int) -> None:
    """Flip 8 bytes inside the image's chunk, as a failing disk or copy would (size unchanged)."""
    with h5py.File(path) as f:
        chunk = f["features"].id.get_chunk_info(image)  # offset and size on disk
    with open(path, "r+b") as handle:
        handle.seek(chunk.byte_offset + chunk.size // 2)
        rotten = bytes(b ^ 0x5A for b in handle.read(8))
        handle.seek(chunk.byte_offset + chunk.size // 2)
        handle.write(rotten)


def test_bit_rot_in_a_chunk_is_an_error_naming_the_file(tmp_path):
    records = _records(10)
    features = np.random.default_rng(2).normal(size=(10, 4, 6)).astype(np.float32)
    path = _write(tmp_path / "f.h5", records, features)
    size = path.stat().st_size
    _rot(path, 7)
    assert path.stat().st_size == size
    read = FeatureFile(path)  # the metadata is intact: the file opens
    np.testing.assert_allclose(read.read([2, 9]), features[[2, 9]], rtol=1e-3, atol=1e-3)
    with pytest.raises(FeatureFileError, match=r"f\.h5: the features of images 7 are corrupt.*delete .* "
                                               r"re-extract"):
        read.read([2, 7])
    with pytest.raises(FeatureFileError, match="corrupt"):
        FeatureFile(path).load_into_memory()


def test_a_decompression_bomb_among_the_images_is_skipped_and_counted(tmp_path):
    cfg = compose_config("dataset.num_images=12", data_root=tmp_path)
    records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
    bomb = decompression_bomb_png(records[5].path)  # a 20000 x 20000 PNG named .jpg
    assert bomb.stat().st_size < 100_000 and not cfg.dataset.strict
    read = FeatureFile(ensure_features(settings_of(cfg), records, tmp_path))
    assert sorted(read.skipped) == [5] and "decompression bomb" in read.skipped[5]
    assert 5 not in np.concatenate(list(read.splits.values()))
    cfg.dataset.strict = True  # strict: not even the file made without it is reused; extraction stops, named
    with pytest.raises(ImageReadError, match=f"{bomb}: cannot read image"):
        ensure_features(settings_of(cfg), records, tmp_path)


def test_images_rebuilt_under_the_same_names_are_extracted_again(tmp_path, caplog):
    """Ids, captions and splits alone matched: shapes rebuilt at another dataset.image_size, or a
    re-encoded copy of a dataset, were served the old images' features."""
    cfg = compose_config("dataset.num_images=12", data_root=tmp_path)
    records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
    path = ensure_features(settings_of(cfg), records, tmp_path)
    before = FeatureFile(path).identity["records"]
    with Image.open(records[3].path) as image:
        image.resize((48, 48)).save(records[3].path)  # the same name, another image
    with caplog.at_level(logging.WARNING):
        again = ensure_features(settings_of(cfg), records, tmp_path)
    assert f"{path} holds this config's features of other images or captions" in caplog.text
    assert FeatureFile(again).identity["records"] != before and again != path
    assert FeatureFile(path).identity["records"] == before  # runs trained on it can still be evaluated


def test_runs_over_other_records_never_replace_a_file_another_run_reads(tmp_path, caplog):
    """A sweep over dataset.num_images (or COCO's max_captions) took turns re-extracting one file:
    a run reading it in parallel stopped with "was replaced since this run read it", each run of
    the sweep paid a whole extraction again, and a finished run's evaluation read other images."""
    cfg = compose_config("dataset.num_images=12", data_root=tmp_path)
    records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
    first = ensure_features(settings_of(cfg), records, tmp_path)
    reading = FeatureFile(first)
    reading.read([0])  # a run that has opened it and goes on reading
    fewer = ensure_features(settings_of(cfg), records[:9], tmp_path)
    assert fewer != first and FeatureFile(fewer).num_images == 9
    assert reading.read([11]).shape == FeatureFile(first).read([11]).shape  # still its own file
    made = {p: p.stat().st_mtime_ns for p in (first, fewer)}
    with caplog.at_level(logging.INFO):  # in turns again: both reused, nothing extracted
        assert ensure_features(settings_of(cfg), records, tmp_path) == first
        assert ensure_features(settings_of(cfg), records[:9], tmp_path) == fewer
    assert "extracting" not in caplog.text and {p: p.stat().st_mtime_ns for p in made} == made


def test_calibration_skips_unreadable_images_and_names_them_when_none_is_left(tmp_path, caplog):
    cfg = compose_config("dataset.num_images=12", "cnn.calibration_images=2", data_root=tmp_path)
    records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
    records[0].path.write_bytes(b"not a jpeg at all")
    with caplog.at_level(logging.WARNING):
        read = FeatureFile(ensure_features(settings_of(cfg), records, tmp_path))
    assert read.attrs["random_init_calibration"] == "conv outputs standardised on 1 images"
    assert f"calibration: skipping unreadable image {records[0].path}" in caplog.text
    assert sorted(read.skipped) == [0]  # and extraction skipped it too
    cfg.cnn.calibration_images = 1
    with pytest.raises(ImageReadError, match=f"none of the 1 calibration image.*{records[0].path}"):
        ensure_features(settings_of(cfg), records, tmp_path)


def _mount(*arguments: str) -> bool:
    return subprocess.run(["mount", *arguments], capture_output=True).returncode == 0


@contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """`folder` read-only for this process: a read-only bind mount (root ignores permission bits),
    or the permission bits when not root."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if not _mount("--bind", str(folder), str(folder)):
        pytest.skip("running as root without permission to mount: cannot make a read-only folder")
    try:
        assert _mount("-o", "remount,bind,ro", str(folder))
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_complete_file_in_a_read_only_data_root_is_read_without_writing(tmp_path):
    cfg = compose_config("dataset.num_images=12", data_root=tmp_path)
    records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
    path = ensure_features(settings_of(cfg), records, tmp_path)
    for leftover in path.parent.glob("*.lock"):  # a shared store holds the finished file only
        leftover.unlink()
    with _read_only(path.parent):
        with pytest.raises(OSError):  # it really is read-only
            (path.parent / "probe").touch()
        assert ensure_features(settings_of(cfg), records, tmp_path) == path
        assert FeatureFile(path).read([0, 3]).shape == (2, 16, 512)
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@contextmanager
def _small_disk(folder: Path, size: str) -> Iterator[None]:
    folder.mkdir()
    if not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)):
        pytest.skip("needs permission to mount a tmpfs (root in a container that allows it)")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
def test_a_disk_without_room_for_the_file_stops_extraction_before_it_starts(tmp_path):
    cfg = compose_config("dataset.num_images=120", data_root=tmp_path)
    records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
    whole = FeatureFile(ensure_features(settings_of(cfg), records, tmp_path / "roomy")).read(range(120))
    disk = tmp_path / "disk"
    partial = partial_path(features_file_of(disk))
    with _small_disk(disk, "1600k"):  # 120 x 16 KiB (1.9 MiB) do not fit
        with pytest.raises(FeatureWriteError) as error:
            ensure_features(settings_of(cfg), records, disk)
        assert (f"no space left on the disk of {partial.parent} for {partial}: the features need about "
                "2.9 MiB and 1.") in str(error.value)  # 1.9 MiB + 1 MiB kept for HDF5's own records
        assert "MiB is free; free space (or set data_root=<a disk with room>) and rerun" in str(error.value)
        assert not partial.exists() and not partial.with_suffix("").exists()
        assert _mount("-o", "remount,size=8m", str(disk))  # the user frees space
        path = ensure_features(settings_of(cfg), records, disk)
        np.testing.assert_array_equal(FeatureFile(path).read(range(120)), whole)
        assert path.stat().st_size < 2.2 * 2**20  # claimed whole at the start, never grown past it


@pytest.mark.slow
def test_prepare_on_a_disk_that_is_too_small_exits_2_with_one_line_not_a_crash(tmp_path):
    tiny = [o for o in TINY if not o.startswith("dataset.num_images")]
    disk = tmp_path / "disk"
    with _small_disk(disk, "1600k"):
        result = python(tmp_path, "-m", "captioner.prepare", *tiny, "dataset.num_images=120",
                        f"dataset.root={tmp_path / 'shapes'}", f"data_root={disk}", check=False)
    assert result.returncode == 2, result.stderr[-3000:]  # not 139, the segfault it used to be
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [e for e in result.stderr.splitlines() if "no space left" in e]
    assert f"for {partial_path(features_file_of(disk))}: the features need about" in line


@pytest.mark.slow
def test_a_file_size_limit_is_one_clear_error_not_a_crash_and_the_rerun_completes(tmp_path):
    # A write the system refuses inside HDF5 (here EFBIG, as `ulimit -f` or a file system's limit
    # gives it; a quota or an I/O error fails the same way) used to end in a segfault at exit.
    tiny = [o for o in TINY if not o.startswith("dataset.num_images")]
    arguments = ["-m", "captioner.prepare", *tiny, "dataset.num_images=120",
                 f"dataset.root={tmp_path / 'shapes'}", f"data_root={tmp_path / 'data'}"]
    result = command(tmp_path, ["bash", "-c", 'ulimit -f 1200 && exec "$0" "$@"', sys.executable,
                                *arguments], check=False)
    assert result.returncode == 2, result.stderr[-3000:]  # not 139
    assert "Traceback" not in result.stderr and "Segmentation" not in result.stderr, result.stderr[-3000:]
    partial = partial_path(features_file_of(tmp_path / "data"))
    (line,) = [e for e in result.stderr.splitlines() if "error:" in e]
    assert (f"the file reached the size limit of this process or file system while creating {partial} "
            "(about 2.9 MiB); raise the limit (`ulimit -f`) or set data_root=") in line
    assert "features 16/120" not in result.stderr  # stopped before computing a single image
    assert not partial.exists()  # an unusable file does not keep the space
    python(tmp_path, *arguments)  # without the limit
    assert FeatureFile(partial.with_suffix("")).num_images == 120


def test_a_run_names_an_unreadable_image_with_strict_and_writes_no_features(tmp_path):
    data_root = tmp_path / "data"
    # the images, and features
    prepare(settings_of(compose_config("dataset.num_images=12", data_root=data_root)))
    broken = data_root / "shapes" / "images" / "shapes_000003.jpg"
    broken.write_bytes(b"not a jpeg")
    features = features_file_of(data_root)
    features.unlink()
    strict = compose_config("dataset.num_images=12", "dataset.strict=true", data_root=data_root)
    with pytest.raises(ImageReadError) as error:
        run(strict, run_dir=tmp_path / "run", base_dir=tmp_path)
    assert f"{broken}: cannot read image" in str(error.value) and "dataset.strict=false" in str(error.value)
    assert not features.exists()


def test_a_partial_file_that_skipped_an_image_is_not_finished_under_strict(tmp_path, monkeypatch):
    """An extraction with dataset.strict=false skipped an image and was cut off; the rerun with
    strict=true resumed it and finished a file without that image."""
    from captioner.features.feature_file import FeatureFileWriter

    calibrated = "cnn.calibration_images=4"  # the random CNN's calibration reads the first 4 only
    lenient = compose_config("dataset.num_images=12", calibrated, data_root=tmp_path)
    records = load_records("shapes", Path(lenient.dataset.root), lenient.dataset)
    records[8].path.write_bytes(b"not a jpeg")

    def cut_off(*_args, **_kwargs):
        raise KeyboardInterrupt  # after the last batch, before the file is finished

    with monkeypatch.context() as patched:
        patched.setattr(FeatureFileWriter, "finish", cut_off)
        with pytest.raises(KeyboardInterrupt):
            ensure_features(settings_of(lenient), records, tmp_path)
    strict = compose_config("dataset.num_images=12", calibrated, "dataset.strict=true", data_root=tmp_path)
    with pytest.raises(ImageReadError, match=rf"{records[8].path}: .*skipped by the interrupted extraction"):
        ensure_features(settings_of(strict), records, tmp_path)


def test_features_from_another_cnn_are_refused_when_named(tmp_path, shared_data_root):
    _, vgg_file = prepare(settings_of(compose_config(data_root=shared_data_root)))
    cfg = compose_config("cnn=inception_v3", "cnn.input_size=75", f"features_path={vgg_file}",
                         data_root=shared_data_root)
    with pytest.raises(FeatureFileError) as error:
        run(cfg, run_dir=tmp_path / "run", base_dir=tmp_path)
    assert f"{vgg_file} was made for another config" in str(error.value)
    assert "cnn: file has 'vgg16', config wants 'inception_v3'" in str(error.value)


def test_prepare_verifies_a_file_it_reuses_and_rebuilds_a_damaged_one(tmp_path, caplog):
    cfg = compose_config("dataset.num_images=12", data_root=tmp_path / "data")
    _, path = prepare(settings_of(cfg))
    _rot(path, 5)
    with caplog.at_level(logging.INFO):
        prepare(settings_of(cfg))  # as training reuses it: the header matches, the chunks are read in batches
    assert "reusing features" in caplog.text and "corrupt" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        prepare(settings_of(cfg), verify=True)  # as `python -m captioner.prepare` reuses it: read whole first
    assert "the features of images 5 are corrupt" in caplog.text and "re-extracting" in caplog.text
    FeatureFile(path).verify()  # whole again
    _rot(path, 5)
    named = compose_config("dataset.num_images=12", f"features_path={path}", data_root=tmp_path / "data")
    with pytest.raises(FeatureFileError, match=f"{path}: the features of images 5 are corrupt"):
        prepare(settings_of(named), verify=True)  # a file the user named is never overwritten


def test_the_identity_a_features_file_is_reused_by_is_the_one_earlier_versions_wrote(tmp_path):
    """A change in how settings reach the cache must not make every existing features file stale:
    this is what files written since schema 3 carry for the tiny shapes config (records aside)."""
    settings = settings_of(compose_config(data_root=tmp_path))
    identity = expected_identity(settings.dataset.name, settings.cnn, [])
    del identity["records"]
    assert identity == {"schema_version": 3, "dataset": "shapes", "cnn": "vgg16",
                        "weights": {"kind": "random", "seed": 0, "calibration_images": 64},
                        "input_size": 64,
                        "normalisation": [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]}


def test_a_first_batch_that_is_not_finite_sets_no_scale(tmp_path):
    """A scale of 0 saved from an inf RMS would make a resumed extraction store zeros for every
    image (finite, checksummed: nothing later would notice)."""
    from captioner.features.extraction import unit_rms_scale

    partial = tmp_path / "shapes-vgg16.h5.partial"
    assert unit_rms_scale(np.float64(4.0), partial, "the CNN's features") == 0.25
    assert unit_rms_scale(0.0, partial, "the CNN's features") == 1.0  # all-zero batch: left as is
    for rms in (np.inf, np.nan):
        with pytest.raises(FeatureFileError, match=f"{partial}: the CNN's features on the first batch are "
                                                   "not finite"):
            unit_rms_scale(rms, partial, "the CNN's features")


def test_a_file_replaced_by_another_runs_extraction_is_refused_not_read_as_this_runs(tmp_path):
    """Two runs of a sweep that differ in, say, CNN weights share the default path and take turns
    re-extracting it; a loader worker opening it by path would read the other run's features."""
    records = _records(6)
    features = np.random.default_rng(0).normal(size=(6, 4, 6)).astype(np.float32)
    path = _write(tmp_path / "f.h5", records, features)
    read = FeatureFile(path)
    other = tmp_path / "other.h5"
    writer = FeatureFileWriter(other, records, 4, 6, {"cnn": "test", "weights": "other"})
    writer.write(0, features * 2)
    writer.finish(grid=[2, 2])
    writer.close()
    os.replace(other, path)  # as the other run's extraction renames its file into place
    with pytest.raises(FeatureFileError, match=f"{path} was replaced since this run read it"):
        read.read([0])


def test_a_random_batchnorm_network_is_the_same_whatever_batch_size_extracts_with_it(tmp_path):
    """Its BatchNorm statistics were estimated in batches of cnn.batch_size, which the file's
    identity does not hold: a file was reused (or resumed) by a run that would have built another
    network."""
    stored = []
    for batch in (2, 6):
        cfg = compose_config("dataset.num_images=12", "cnn=mobilenet_v2", "cnn.input_size=64",
                             "cnn.calibration_images=8", f"cnn.batch_size={batch}",
                             data_root=tmp_path / str(batch))
        assert cfg.cnn.weights is None  # shapes: a random network
        records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
        read = FeatureFile(ensure_features(settings_of(cfg), records, tmp_path / str(batch)))
        assert read.attrs["calibration_batch_size"] == 32
        stored.append(read.read(list(range(12))).astype(np.float32) / read.attrs["feature_scale"])
    np.testing.assert_allclose(stored[0], stored[1], rtol=2e-2, atol=2e-2 * float(np.abs(stored[0]).max()))
