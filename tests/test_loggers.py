"""W&B runs of a sweep share a group and carry dataset/cnn/rnn, offline."""

from __future__ import annotations

from captioner.records.run_summary import RunSummary
from captioner.trainer_setup.loggers import build_loggers, finish_loggers, record_summary
from tests.conftest import compose_config, settings_of


def test_wandb_runs_get_the_sweep_group_tags_config_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    settings = settings_of(compose_config("logger=wandb"))
    tags = settings.tags
    assert tags == ["dataset=shapes", "cnn=vgg16", "rnn=gru"]
    (logger,) = build_loggers(settings.loggers, tmp_path, tags, settings.config,
                              group="smoke-2026-01-01_00-00-00")
    try:
        run = logger.experiment
        assert run.offline
        assert run.group == "smoke-2026-01-01_00-00-00"
        assert set(tags) <= set(run.tags)
        assert run.config["dataset"]["name"] == "shapes" and run.config["rnn"]["cell"] == "gru"
        record_summary([logger], RunSummary(status="completed", test={"cider": 1.5}, best_val_cider=1.2))
        assert run.summary["test/cider"] == 1.5 and run.summary["status"] == "completed"
    finally:
        finish_loggers([logger])
    assert list(tmp_path.glob("wandb/offline-run-*"))
