"""Training through the real Lightning Trainer on tiny generated data."""

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning
import torch

from captioner.data.vocabulary import tokenize
from captioner.features.cache import prepare
from captioner.features.feature_file import FeatureFile, FeatureFileError
from captioner.runs.run import run
from captioner.training.loss_guard import NonFiniteLossError
from captioner.training.module import CaptionModule
from tests.conftest import compose_config, settings_of


def test_a_tiny_model_overfits_a_handful_of_captions(tmp_path):
    # 8 scenes with one caption each, scored on the images it trained on.
    cfg = compose_config(
        "dataset.num_images=8", "dataset.captions_per_image=1",
        "dataset.split_fractions={train: 0.75, val: 0.125, test: 0.125}",
        "dataset.val_split=train", "dataset.test_split=train",
        "model.dropout=0.0", "model.lr=3e-3", "model.attention_regularization=0",
        "data.batch_size=8", "trainer.max_epochs=150", "trainer.check_val_every_n_epoch=50",
        data_root=tmp_path / "data")
    summary = run(cfg, tmp_path / "run")
    assert summary.status == "completed"
    assert summary.test["bleu4"] > 0.9, summary.test
    captions = json.loads((tmp_path / "run" / "captions.json").read_text())
    exact = sum(c["caption"] == " ".join(tokenize(c["references"][0])) for c in captions)
    assert exact >= 5, captions


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_a_run_writes_everything_a_user_looks_for(tiny_cfg, tmp_path, rnn):
    tiny_cfg.rnn.cell = rnn
    summary = run(tiny_cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["config"]["rnn"] == rnn
    assert set(metrics["test"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider"}
    assert all(0 <= v <= 10 for v in metrics["test"].values())
    assert metrics == json.loads(json.dumps(summary.as_dict()))
    provenance = metrics["provenance"]  # which code, libraries and device made these numbers
    assert len(provenance["git_commit"]) == 40 and isinstance(provenance["git_dirty"], bool)
    assert provenance["torch"] == torch.__version__ and provenance["device"].startswith("cpu")
    assert provenance["pytorch_lightning"] == pytorch_lightning.__version__
    assert provenance["python"] == platform.python_version()
    assert provenance["captioner"] == metadata.version("captioner")  # (the package has no __version__)
    patch = tmp_path / "code.diff"  # the uncommitted changes it trained with, when there were any
    assert patch.exists() == provenance["git_dirty"]
    if patch.exists():
        assert hashlib.sha256(patch.read_bytes()).hexdigest() == provenance["git_patch_sha256"]
    captions = json.loads((tmp_path / "captions.json").read_text())
    assert len(captions) == 6  # every test image once
    assert all(c["references"] and isinstance(c["caption"], str) for c in captions)
    assert (tmp_path / "vocabulary.json").exists()
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert Path(metrics["checkpoint"]).exists()
    checkpoint = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=True)
    record = checkpoint["hyper_parameters"]["cnn"]
    assert record["cnn"] == "vgg16" and record["weights"] == {"kind": "random", "seed": 0,
                                                              "calibration_images": 64}
    assert record["grid"] == [4, 4] and record["input_size"] == 64 and record["feature_scale"] > 0
    assert len(list((tmp_path / "plots").glob("attention_*.png"))) == 2
    assert (tmp_path / "csv" / "metrics.csv").read_text().count("val/cider") == 1


def test_a_failed_run_says_so_in_metrics_json(tmp_path):
    cfg = compose_config("dataset.split_fractions={train: 1.0, val: 0.0, test: 0.0}",
                         data_root=tmp_path / "data")
    with pytest.raises(ValueError, match="split 'val' has no images"):
        run(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "split 'val' has no images" in metrics["error"]


def test_test_captions_can_be_written_with_beam_search(tiny_cfg, tmp_path):
    tiny_cfg.decode.strategy = "beam"
    tiny_cfg.decode.beam_size = 3
    summary = run(tiny_cfg, tmp_path)
    assert summary.status == "completed"
    checkpoint = torch.load(summary.checkpoint, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["decode"]["strategy"] == "beam"
    assert len(json.loads((tmp_path / "captions.json").read_text())) == 6


def test_last_checkpoint_is_the_last_epoch_even_when_it_did_not_improve(tiny_cfg, tmp_path):
    # lr ~ 0: every epoch scores the same, so only epoch 0 is ever the best. Lightning's own
    # save_last wrote last.ckpt only for the best, and a resume then repeated the later epochs.
    tiny_cfg.model.lr = 1e-12
    tiny_cfg.trainer.max_epochs = 3
    summary = run(tiny_cfg, tmp_path)
    best = torch.load(summary.checkpoint, map_location="cpu", weights_only=True)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 0
    assert last["epoch"] == 2 and last["global_step"] == 3 * best["global_step"]


@pytest.mark.parametrize("every_step", [True, False], ids=["checked-every-step", "deferred-as-on-a-gpu"])
def test_a_loss_that_turns_nan_stops_the_run_and_keeps_the_last_good_checkpoint(shared_data_root, tmp_path,
                                                                               monkeypatch, every_step):
    # lr 1e30: the first step is finite and checkpointed (mid-epoch, after every batch); its
    # update makes the next loss infinite or NaN. Deferred, the GPU's way (no sync per step), the
    # next checkpoint finds it: the weights trained past it are never written.
    monkeypatch.setattr(CaptionModule, "check_loss_every_step", every_step)
    cfg = compose_config("model.lr=1e30", "data.batch_size=8", "checkpoint.every_minutes=0.00001",
                         data_root=shared_data_root)
    with pytest.raises(NonFiniteLossError, match=r"the training loss is (nan|inf) at step \d+"):
        run(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "NonFiniteLossError" in metrics["error"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(bool(torch.isfinite(value).all()) for value in state.values())


def test_nan_features_are_refused_with_the_file_named_before_training(tmp_path):
    import h5py

    cfg = compose_config(data_root=tmp_path / "data")
    _, path = prepare(settings_of(cfg))
    bad = int(FeatureFile(path).splits["train"][2])
    with h5py.File(path, "r+") as file:  # consistent, checksums valid: as a broken CNN writes it
        file["features"][bad, 0, 0] = np.nan
    with pytest.raises(FeatureFileError, match=f"{path}: the features of 1 image\\(s\\) are not finite"):
        run(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"
    assert not (tmp_path / "run" / "checkpoints").exists()
