"""The best checkpoint across a resume into another run folder (trainer_setup.resumable_checkpoint.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import open_dict

from captioner.records.run_summary import RunSummary
from captioner.runs.run import run
from captioner.trainer_setup.resumable_checkpoint import ResumableCheckpoint


def _best_state(checkpoint: Path) -> dict:
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return next(state for key, state in saved["callbacks"].items()
                if key.startswith("ModelCheckpoint") and state["monitor"] == "val/cider")


def _best_in(folder: Path) -> ResumableCheckpoint:
    return ResumableCheckpoint(dirpath=folder, filename="best-epoch{epoch:02d}", monitor="val/cider",
                          mode="max", auto_insert_metric_name=False)


def test_a_resume_into_another_folder_keeps_the_earlier_best_and_its_score(trained_run, tmp_path):
    state = _best_state(trained_run / "checkpoints" / "last.ckpt")
    earlier = Path(state["best_model_path"])
    content = earlier.read_bytes()
    best = _best_in(tmp_path / "checkpoints")
    assert best.state_key.startswith("ModelCheckpoint{")  # earlier checkpoints' state still loads
    best.load_state_dict(state)

    here = tmp_path / "checkpoints" / earlier.name
    assert best.best_model_path == str(here) and here.read_bytes() == content
    assert float(best.best_model_score) == float(state["best_model_score"])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    lower = torch.tensor(float(state["best_model_score"]) - 0.01)
    assert not best.check_monitor_top_k(trainer, lower)  # Lightning's own: the first score was "best"
    assert best.check_monitor_top_k(trainer, torch.tensor(float(state["best_model_score"]) + 0.01))

    here.unlink()  # a better epoch replaces the link here: the earlier run keeps its file
    assert earlier.read_bytes() == content


def test_an_earlier_best_that_is_gone_leaves_the_best_to_the_epochs_after_the_resume(trained_run, tmp_path):
    state = {**_best_state(trained_run / "checkpoints" / "last.ckpt"),
             "best_model_path": str(tmp_path / "gone" / "best-epoch01.ckpt")}
    best = _best_in(tmp_path / "checkpoints")
    best.load_state_dict(state)
    assert best.best_model_path == "" and best.best_model_score is None


@pytest.mark.slow
def test_a_run_resumed_into_a_new_folder_tests_the_best_of_all_its_epochs(trained_run, tmp_path):
    # lr ~ 0 after the resume: the new epoch scores as the last one did, never above the best
    from tests.conftest import compose_config

    cfg = compose_config("dataset.num_images=70", "trainer.max_epochs=5", "model.lr=1e-12",
                         data_root=trained_run.parent / "data")
    with open_dict(cfg):
        cfg.ckpt_path = str(trained_run / "checkpoints" / "last.ckpt")
    summary = run(cfg, run_dir=tmp_path / "resumed", base_dir=trained_run.parent)
    earlier = RunSummary.read(trained_run / "metrics.json")
    assert summary.status == "completed" and [e["epoch"] for e in summary.history] == [0, 1, 2, 3, 4]
    scores = [e["cider"] for e in summary.history]
    assert summary.best_val_cider == pytest.approx(max(scores))
    assert Path(summary.checkpoint).parent == tmp_path / "resumed" / "checkpoints"
    assert Path(summary.checkpoint).name == Path(earlier.checkpoint).name or scores[-1] >= max(scores[:-1])
    assert Path(earlier.checkpoint).is_file()


def test_a_run_folder_moved_and_resumed_where_it_is_now_keeps_its_best(tmp_path):
    earlier = tmp_path / "before" / "checkpoints" / "best-epoch01.ckpt"
    moved = tmp_path / "after" / "checkpoints" / earlier.name
    moved.parent.mkdir(parents=True)
    moved.write_bytes(b"the best epoch's weights")
    state = {"monitor": "val/cider", "best_model_score": torch.tensor(0.5), "best_model_path": str(earlier),
             "dirpath": str(earlier.parent), "best_k_models": {str(earlier): torch.tensor(0.5)},
             "kth_best_model_path": str(earlier), "kth_value": torch.tensor(0.5), "last_model_path": ""}
    best = _best_in(moved.parent)
    best.load_state_dict(state)
    assert best.best_model_path == str(moved) and float(best.best_model_score) == 0.5
