"""`python train.py` as a user runs it: Hydra command line, multirun, errors, kill and resume."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ENV, TINY, features_file_of, python, run_folders, start_train, train


@pytest.mark.slow
def test_multirun_gives_each_run_its_own_directory(tmp_path, shared_data_root):
    result = train(tmp_path, "-m", "rnn=gru,lstm", data_root=shared_data_root)
    found = run_folders(tmp_path)
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


@pytest.mark.slow
def test_wandb_and_tensorboard_loggers_work_offline(tmp_path, shared_data_root):
    train(tmp_path, "logger=wandb", data_root=shared_data_root)
    (run_dir,) = run_folders(tmp_path)
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
    result = train(tmp_path, *overrides, data_root=tmp_path / "data", check=False)
    assert result.returncode != 0
    assert message in result.stderr and "Available options" in result.stderr


def test_an_unwritable_data_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = train(tmp_path, data_root=blocker, check=False)
    assert result.returncode != 0
    assert f"cannot create the data directory {blocker}" in result.stderr
    assert "data_root=" in result.stderr


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, shared_data_root):
    overrides = ["trainer.max_epochs=40", "dataset.num_images=60"]  # < 1 s an epoch: killed long before
    process = start_train(tmp_path, *overrides, data_root=shared_data_root, quiet=True)
    deadline = time.time() + 300
    last = None
    while time.time() < deadline and process.poll() is None:
        found = list((tmp_path / "outputs").glob("**/checkpoints/last.ckpt"))
        if found:  # the first epoch's checkpoint: the kill comes a second later, after more saves
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
    resumed = [r for r in run_folders(tmp_path) if r != first_run]
    assert len(resumed) == 1
    metrics = json.loads((resumed[0] / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["resumed_from"] == str(last)
    assert metrics["epochs"] == 40


@pytest.mark.slow
def test_prepare_extracts_features_without_training(tmp_path):
    data_root = tmp_path / "data"
    result = python(tmp_path, "-m", "captioner.prepare", *TINY, "dataset.num_images=12",
                    f"data_root={data_root}")
    features = features_file_of(data_root)
    assert f"{features}: 12 images" in result.stdout
    assert features.is_file() and not list((tmp_path / "outputs").glob("**/checkpoints"))


@pytest.mark.slow
def test_a_killed_extraction_resumes_and_gives_the_same_file(tmp_path):
    import h5py
    import numpy as np

    overrides = [*TINY, "dataset.num_images=400", "cnn.batch_size=8"]

    def prepare(data_root: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "captioner.prepare", *overrides,
                                 f"data_root={data_root}"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=ENV)

    reference = prepare(tmp_path / "whole")
    assert reference.wait(timeout=600) == 0
    interrupted = tmp_path / "killed"
    name = features_file_of(interrupted).name
    partial = interrupted / "features" / f"{name}.partial"
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
    with h5py.File(tmp_path / "whole" / "features" / name) as a, \
            h5py.File(interrupted / "features" / name) as b:
        whole, pieced = a["features"][:], b["features"][:]
        assert a.attrs["feature_scale"] == b.attrs["feature_scale"]
        assert a["image_ids"][:].tolist() == b["image_ids"][:].tolist()
    # bit for bit the file an uninterrupted extraction writes
    np.testing.assert_array_equal(pieced, whole)
