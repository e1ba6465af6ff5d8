from pathlib import Path

import h5py
import numpy as np
import pytest

from captioner.features import FeatureFile, FeatureFileError, FeatureFileWriter, partial_path
from captioner.prepare import ensure_features
from captioner.sources import ImageRecord, load_records
from tests.conftest import compose_config


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
    np.testing.assert_array_equal(read.read([9, 0]), features[[9, 0]].astype(np.float16))
    with h5py.File(path) as f:
        assert f["features"].chunks == (1, 4, 6)


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


def test_values_that_overflow_float16_are_refused(tmp_path):
    records = _records(3)
    writer = FeatureFileWriter(tmp_path / "f.h5", records, 1, 2, {})
    with pytest.raises(FeatureFileError, match="not finite in float16"):
        writer.write(0, np.full((3, 1, 2), 1e6, np.float32))
    writer.close()


def test_real_extraction_writes_finite_scaled_features(tiny_cfg, shared_data_root):
    records = load_records("shapes", Path(tiny_cfg.dataset.root), tiny_cfg.dataset)
    path = ensure_features(tiny_cfg, records, shared_data_root)
    read = FeatureFile(path)
    assert read.shape == (60, 16, 512)  # 64 px through VGG16's conv5_3: 4x4 regions
    values = read.read(range(60)).astype(np.float32)
    assert np.isfinite(values).all() and values.std() > 0
    assert read.attrs["grid"] == [4, 4] and read.attrs["feature_scale"] > 0
    assert read.attrs["random_init_calibration"] == "conv outputs standardised on 60 images"
    assert read.identity["cnn"] == "vgg16"
    assert read.identity["weights"] == "random(seed=0,calibration_images=64)"
    # Different images give different features (the grid carries the picture).
    assert np.abs(values[0] - values[1]).mean() > 1e-3
    # A second call reuses the file as it is.
    mtime = path.stat().st_mtime_ns
    assert ensure_features(tiny_cfg, records, shared_data_root) == path
    assert path.stat().st_mtime_ns == mtime


def test_a_stale_default_file_is_rebuilt_and_a_named_one_is_an_error(tmp_path):
    cfg = compose_config("dataset.num_images=12", data_root=tmp_path)
    records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
    path = ensure_features(cfg, records, tmp_path)
    other = compose_config("dataset.num_images=12", "cnn=inception_v3", "cnn.input_size=75",
                           data_root=tmp_path)
    with pytest.raises(FeatureFileError, match=r"shapes-vgg16\.h5 was made for another config.*cnn"):
        ensure_features(other, records, tmp_path, explicit_path=path)
    cfg.cnn.seed = 1  # other random weights: the default file is stale and rebuilt
    rebuilt = ensure_features(cfg, records, tmp_path)
    assert rebuilt == path and FeatureFile(path).identity["weights"].startswith("random(seed=1,")


def test_unreadable_and_truncated_images_are_skipped_counted_and_listed(tmp_path):
    cfg = compose_config("dataset.num_images=16", data_root=tmp_path)
    records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
    garbage, truncated = records[3].path, records[9].path
    garbage.write_bytes(b"not a jpeg at all")
    truncated.write_bytes(truncated.read_bytes()[:300])
    path = ensure_features(cfg, records, tmp_path)
    read = FeatureFile(path)
    assert sorted(read.skipped) == [3, 9]
    assert str(garbage) in read.skipped[3] and str(truncated) in read.skipped[9]
    assert read.attrs["skipped_count"] == 2
    in_splits = np.concatenate(list(read.splits.values())).tolist()
    assert sorted(in_splits) == [i for i in range(16) if i not in (3, 9)]
    assert np.isfinite(read.read(range(16)).astype(np.float32)).all()
