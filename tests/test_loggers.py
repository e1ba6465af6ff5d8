"""W&B runs of a sweep share a group and carry dataset/cnn/rnn, offline."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from captioner.records.run_summary import RunSummary
from captioner.runs.run import run
from captioner.trainer_setup.loggers import build_loggers, finish_loggers, record_summary
from tests.conftest import compose_config, settings_of


def test_wandb_runs_get_the_sweep_group_tags_config_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    settings = settings_of(compose_config("logger=wandb"))
    tags = settings.tags
    assert tags == ["dataset=shapes", "cnn=vgg16", "rnn=gru"]
    (logger,) = build_loggers(settings.loggers, tmp_path, tags, settings.config,
                              group="smoke-2026-01-01_00-00-00", name="3 rnn=gru seed=1")
    try:
        run = logger.experiment
        assert run.offline
        assert run.group == "smoke-2026-01-01_00-00-00"
        assert run.name == "3 rnn=gru seed=1"  # as the report names it, not a random W&B name
        assert set(tags) <= set(run.tags)
        assert run.config["dataset"]["name"] == "shapes" and run.config["rnn"]["cell"] == "gru"
        record_summary([logger], RunSummary(status="completed", test={"cider": 1.5}, best_val_cider=1.2))
        assert run.summary["test/cider"] == 1.5 and run.summary["status"] == "completed"
    finally:
        finish_loggers([logger])
    assert list(tmp_path.glob("wandb/offline-run-*"))


def test_a_sweeps_run_is_named_in_wandb_by_its_folder_and_overrides(tmp_path):
    from captioner.records.run_folder import RunFolder
    from captioner.runs.run import _wandb_name

    folder = RunFolder(tmp_path / "sweep" / "3")
    overrides = ["rnn=gru", "seed=1", "ckpt_path=last", "hydra.sweep.dir=/somewhere"]
    assert _wandb_name(folder, overrides, in_sweep=True) == "3 rnn=gru seed=1"  # the report's run column
    assert _wandb_name(folder, overrides, in_sweep=False) is None  # a single run: W&B's own name
    assert len(_wandb_name(folder, [f"model.lr={'1' * 200}"], in_sweep=True)) == 128  # kept short


@pytest.mark.parametrize("environment, asked, mode", [
    ("disabled", None, "disabled"), ("disabled", False, "disabled"), ("disabled", True, "disabled"),
    ("offline", None, "offline"), ("online", None, "online"), (None, None, "offline"),
    (None, False, "online"), ("online", True, "offline")])
def test_one_wandb_mode_for_the_runs_and_the_comparison_table(monkeypatch, environment, asked, mode):
    # the table and the runs followed two rules: WANDB_MODE=disabled with offline=false sent the
    # table online while the runs were disabled
    from captioner.trainer_setup.loggers import wandb_mode

    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    if environment is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", environment)
    assert wandb_mode(asked) == mode


def test_wandb_mode_disabled_writes_nothing_and_leaves_the_mode_for_later_runs(tmp_path, monkeypatch):
    # Before: `disabled` was taken as offline, and Lightning's offline logger set WANDB_MODE=dryrun for
    # the whole process: this run and every later one of a sequential sweep were written offline.
    import os

    import wandb

    monkeypatch.setenv("WANDB_MODE", "disabled")
    settings = settings_of(compose_config("logger=wandb"))
    (logger,) = build_loggers(settings.loggers, tmp_path, settings.tags, settings.config, group="g")
    try:
        assert logger.experiment.disabled
        record_summary([logger], RunSummary(status="completed", test={"cider": 1.5}))
    finally:
        finish_loggers([logger])
        wandb.teardown()  # wandb keeps the first run's mode in its process-wide setup: later tests' runs
    assert os.environ["WANDB_MODE"] == "disabled" and not (tmp_path / "wandb").exists()


def test_a_wandb_run_is_closed_when_the_loggers_cannot_all_be_built(tmp_path, monkeypatch):
    # Before: a W&B run started, then its config update failed: the run stayed open, and the next
    # job of a sequential sweep logged into it.
    import wandb
    from wandb.sdk import wandb_config

    def refused(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb_config.Config, "update", refused)
    settings = settings_of(compose_config("logger=wandb"))
    with pytest.raises(OSError, match="disk full"):
        build_loggers(settings.loggers, tmp_path, settings.tags, settings.config, group="g")
    assert wandb.run is None


def test_a_wandb_run_that_cannot_be_closed_leaves_the_run_completed_and_its_process_clean(
        tmp_path, shared_data_root, monkeypatch):
    # wandb.finish raising (W&B unreachable) skipped the lease's release and the DDP variables'
    # reset, and turned a completed run into an error.
    import os

    import wandb

    from captioner.launch.ddp_under_hydra import RESUME_ENV
    from captioner.runs.run import run

    def unreachable(*args, **kwargs):
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setenv("WANDB_MODE", "offline")
    finish = wandb.finish
    monkeypatch.setattr(wandb, "finish", unreachable)
    try:
        summary = run(compose_config("logger=wandb", "trainer.max_epochs=1", data_root=shared_data_root),
                      tmp_path / "run")
    finally:
        finish()  # the W&B run this process still holds: the next test starts its own
    assert summary.status == "completed"
    assert RESUME_ENV not in os.environ  # ddp_job's variables went back with the lease


@pytest.mark.slow
def test_a_resumed_run_goes_on_in_its_wandb_run_and_its_tensorboard_stream(tmp_path, shared_data_root,
                                                                          monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"

    def train(*overrides: str) -> RunSummary:
        cfg = compose_config("logger=[wandb,tensorboard,csv]", "trainer.log_every_n_steps=1", "meteor=false",
                             *overrides, data_root=shared_data_root)
        return run(cfg, run_dir, base_dir=tmp_path)

    first = train("trainer.max_epochs=1")
    epoch_one = run_dir / "checkpoints" / "after-epoch-1.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", epoch_one)
    second = train("trainer.max_epochs=2", "ckpt_path=last")
    # as after a kill: last.ckpt is older than the logs (a mid-epoch save), metrics.json still says
    # running (a completed run with these settings is kept as it is), and the run goes on from it
    shutil.copy(epoch_one, run_dir / "checkpoints" / "last.ckpt")
    killed = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**killed, "status": "running"}))
    third = train("trainer.max_epochs=2", "ckpt_path=last")
    assert first.wandb_run_id and first.wandb_run_id == second.wandb_run_id == third.wandb_run_id
    offline = sorted(run_dir.glob("wandb/offline-run-*"))
    # wandb 0.31 cannot resume offline: each process writes its own folder, all three with the run's
    # id (online, W&B continues the one run)
    assert len(offline) == 3 and all(p.name.endswith(f"-{first.wandb_run_id}") for p in offline)

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    steps = [event.step for event in events.Scalars("train/loss")]
    # every step once, in order: what the first attempt logged past epoch 1 is hidden (purge_step)
    assert steps == list(range(steps[0], steps[0] + len(steps)))
    assert not [p for p in (run_dir / "tensorboard").iterdir() if p.is_dir()]  # no version_N: one stream
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    csv_steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert csv_steps == sorted(set(csv_steps)) and csv_steps == steps

    fresh = run(compose_config("logger=wandb", "meteor=false", data_root=shared_data_root), tmp_path / "new",
                base_dir=tmp_path)
    assert fresh.wandb_run_id and fresh.wandb_run_id != first.wandb_run_id
    # a checkpoint named by its path may warm-start another experiment: it gets a W&B run of its own
    warm_start = compose_config("logger=wandb", "meteor=false", "trainer.max_epochs=3",
                                f"ckpt_path={epoch_one}", data_root=shared_data_root)
    warm = run(warm_start, tmp_path / "warm", base_dir=tmp_path)
    assert warm.wandb_run_id not in (None, first.wandb_run_id, fresh.wandb_run_id)
