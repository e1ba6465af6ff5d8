"""`python train.py` as a user runs it: Hydra command line, multirun, errors, kill and resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY


def train(tmp_path: Path, *overrides: str, data_root: Path | None = None,
          check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    flags = [o for o in overrides if o.startswith("-")]  # Hydra wants -m before the overrides
    overrides = tuple(o for o in overrides if not o.startswith("-"))
    command = [sys.executable, str(REPO / "train.py"), *flags, *TINY,
               f"data_root={data_root or tmp_path / 'data'}", *overrides]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "WANDB_MODE": "offline"})
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def runs(tmp_path: Path) -> list[Path]:
    return sorted(p.parent for p in (tmp_path / "outputs").glob("**/metrics.json"))


def test_multirun_gives_each_run_its_own_directory(tmp_path, shared_data_root):
    result = train(tmp_path, "-m", "rnn=gru,lstm", data_root=shared_data_root)
    found = runs(tmp_path)
    assert len(found) == 2, result.stdout
    cells = set()
    for run_dir in found:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "completed"
        cells.add(metrics["config"]["rnn"])
        assert (run_dir / ".hydra" / "config.yaml").exists()
        assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert cells == {"gru", "lstm"}
    assert "test scores" in result.stdout and "generated:" in result.stdout


def test_wandb_and_tensorboard_loggers_work_offline(tmp_path, shared_data_root):
    train(tmp_path, "logger=wandb", data_root=shared_data_root)
    (run_dir,) = runs(tmp_path)
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    # the test examples as a W&B table (with its images), and the same examples in the run folder
    (table,) = offline.glob("files/media/table/test/examples_*.table.json")
    rows = json.loads(table.read_text())["data"]
    written = {c["image_id"]: c for c in json.loads((run_dir / "captions.json").read_text())}
    assert len(rows) == 2
    for image_id, _, generated, references, _ in rows:  # a one-epoch model may write ""
        assert generated == written[image_id]["caption"]
        assert references.split("\n") == written[image_id]["references"]
    assert len(list(offline.glob("files/media/images/test/attention_*.png"))) == 2
    assert (run_dir / "examples.md").read_text().count("**generated:**") == 2
    train(tmp_path, "logger=tensorboard", data_root=shared_data_root)
    assert list((tmp_path / "outputs").glob("**/tensorboard/events.out.tfevents.*"))


@pytest.mark.parametrize("overrides, message", [
    (["dataset=nosuch"], "Could not find 'dataset/nosuch'"),
    (["cnn=nosuch"], "Could not find 'cnn/nosuch'"),
    (["rnn=nosuch"], "Could not find 'rnn/nosuch'"),
])
def test_unknown_group_choices_name_the_choice_and_the_options(tmp_path, overrides, message):
    result = train(tmp_path, *overrides, check=False)
    assert result.returncode != 0
    assert message in result.stderr and "Available options" in result.stderr


def test_an_unwritable_data_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = train(tmp_path, data_root=blocker, check=False)
    assert result.returncode != 0
    assert f"cannot create the data directory {blocker}" in result.stderr
    assert "data_root=" in result.stderr


def test_an_unreadable_image_is_named(tmp_path):
    data_root = tmp_path / "data"
    train(tmp_path, "trainer.max_epochs=0", "dataset.num_images=12", data_root=data_root)
    broken = data_root / "shapes" / "images" / "shapes_000003.jpg"
    broken.write_bytes(b"not a jpeg")
    (data_root / "features" / "shapes-vgg16.h5").unlink()
    result = train(tmp_path, "dataset.num_images=12", "dataset.strict=true", data_root=data_root,
                   check=False)
    assert result.returncode != 0
    assert f"{broken}: cannot read image" in result.stderr and "dataset.strict=false" in result.stderr
    assert not (data_root / "features" / "shapes-vgg16.h5").exists()


def test_features_from_another_cnn_are_refused_when_named(tmp_path, shared_data_root):
    train(tmp_path, "trainer.max_epochs=0", data_root=shared_data_root)
    vgg_file = shared_data_root / "features" / "shapes-vgg16.h5"
    result = train(tmp_path, "cnn=inception_v3", "cnn.input_size=75", f"features_path={vgg_file}",
                   data_root=shared_data_root, check=False)
    assert result.returncode != 0
    assert f"{vgg_file} was made for another config" in result.stderr
    assert "cnn: file has 'vgg16', config wants 'inception_v3'" in result.stderr


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, shared_data_root):
    overrides = ["trainer.max_epochs=40", "dataset.num_images=60"]
    command = [sys.executable, str(REPO / "train.py"), *TINY, f"data_root={shared_data_root}", *overrides]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "WANDB_MODE": "offline"})
    deadline = time.time() + 300
    last = None
    while time.time() < deadline and process.poll() is None:
        found = list((tmp_path / "outputs").glob("**/checkpoints/last.ckpt"))
        if found and found[0].stat().st_mtime < time.time() - 0.5:
            # wait for a second epoch's checkpoint so the kill lands mid-epoch, after some saves
            last = found[0]
            break
        time.sleep(0.2)
    assert last is not None, "no checkpoint appeared"
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first_run = last.parent.parent
    assert not (first_run / "metrics.json").exists() or \
        json.loads((first_run / "metrics.json").read_text())["status"] != "completed"

    time.sleep(1.1)  # a new Hydra run directory (one per second)
    train(tmp_path, *overrides, "ckpt_path=last", data_root=shared_data_root)
    resumed = [r for r in runs(tmp_path) if r != first_run]
    assert len(resumed) == 1
    metrics = json.loads((resumed[0] / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["resumed_from"] == str(last)
    assert metrics["epochs"] == 40


def test_prepare_extracts_features_without_training(tmp_path):
    data_root = tmp_path / "data"
    command = [sys.executable, "-m", "captioner.prepare", *TINY, "dataset.num_images=12",
               f"data_root={data_root}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    features = data_root / "features" / "shapes-vgg16.h5"
    assert f"{features}: 12 images" in result.stdout
    assert features.is_file() and not list((tmp_path / "outputs").glob("**/checkpoints"))


def test_a_killed_extraction_resumes_and_gives_the_same_file(tmp_path):
    import h5py
    import numpy as np

    overrides = [*TINY, "dataset.num_images=400", "cnn.batch_size=8"]

    def prepare(data_root: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "captioner.prepare", *overrides,
                                 f"data_root={data_root}"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    reference = prepare(tmp_path / "whole")
    assert reference.wait(timeout=600) == 0
    interrupted = tmp_path / "killed"
    partial = interrupted / "features" / "shapes-vgg16.h5.partial"
    process = prepare(interrupted)
    deadline = time.time() + 300
    while time.time() < deadline and not partial.exists():
        time.sleep(0.05)
    time.sleep(1.5)  # let some batches land
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial.exists() and not partial.with_suffix("").exists()

    resumed = prepare(interrupted)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    resumed_at = int(re.search(r"resuming .* at image (\d+) of 400", output).group(1))
    assert 0 < resumed_at < 400 and not partial.exists()
    with h5py.File(tmp_path / "whole" / "features" / "shapes-vgg16.h5") as a, \
            h5py.File(interrupted / "features" / "shapes-vgg16.h5") as b:
        whole, pieced = a["features"][:], b["features"][:]
        assert a.attrs["feature_scale"] == b.attrs["feature_scale"]
        assert a["image_ids"][:].tolist() == b["image_ids"][:].tolist()
    # bit for bit the file an uninterrupted extraction writes
    np.testing.assert_array_equal(pieced, whole)
