"""Lightning DDP on CPU (gloo, 2 processes): same scores as one process, runs stay in their folders."""

from __future__ import annotations

import json

import pytest

from captioner.features.feature_file import FeatureFile
from tests.conftest import TINY_COMMAND, command, python, train_command


@pytest.mark.slow
def test_two_process_evaluation_scores_equal_one_process(trained_run, tmp_path):
    checkpoint = str(trained_run / "checkpoints" / "last.ckpt")
    for name, devices in (("one", "1"), ("two", "2")):
        python(tmp_path, "-m", "captioner.evaluate", checkpoint, "--accelerator", "cpu", "--no-meteor",
               "--devices", devices, "--output", str(tmp_path / name))
    one, two = (json.loads((tmp_path / n / "scores.json").read_text()) for n in ("one", "two"))
    results = [json.loads((tmp_path / n / "results.json").read_text()) for n in ("one", "two")]

    features = FeatureFile(one["features"])
    test_ids = sorted(features.image_ids[i] for i in features.splits["test"])
    assert len(test_ids) % 2 == 1
    for found in results:  # every test image exactly once, in the COCO results format
        assert sorted(r["image_id"] for r in found) == test_ids
        assert all(set(r) == {"image_id", "caption"} and r["caption"] for r in found)
    assert results[0] == results[1]
    assert one["images"] == two["images"] == len(test_ids)
    assert two["scores"] == pytest.approx(one["scores"], rel=1e-6, abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "parallel"])
def test_ddp_runs_of_a_multirun_stay_in_their_own_folders(tmp_path, shared_data_root, launcher):
    # basic: both jobs in this process, one after the other; parallel: each in a process of its own.
    overrides = [o for o in TINY_COMMAND if not o.startswith("trainer.devices")]
    command(tmp_path, train_command(shared_data_root, "-m", f"hydra/launcher={launcher}", "trainer=ddp",
                                    "trainer.devices=2", "rnn=gru,lstm", "logger=wandb", tiny=overrides))
    # Lightning alone would re-run the whole `-m` command line in each extra rank: more sweeps.
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    assert list((tmp_path / "outputs").iterdir()) == [tmp_path / "outputs" / "multirun"]
    # the runs, report.html's photos, and the sweep's W&B comparison table (one offline run)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "report_images", "wandb"]
    assert len(list((sweep / "wandb").glob("offline-run-*"))) == 1
    for job, rnn in (("0", "gru"), ("1", "lstm")):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["config"]["rnn"] == rnn
        assert [e["epoch"] for e in metrics["history"]] == [0]
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert len(list((sweep / job / "wandb").glob("offline-run-*"))) == 1  # rank 0's only
