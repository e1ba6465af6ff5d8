"""Experiment loggers from the `logger=` config group: csv (default), tensorboard, wandb."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from captioner.records.run_summary import RunSummary
from captioner.settings import LoggerSettings

log = logging.getLogger(__name__)


def wandb_mode(asked: bool | None) -> str:
    """disabled, offline or online, for the runs and the sweep's comparison table alike:
    `WANDB_MODE=disabled` turns W&B off whatever the config says (its use: CI, a quick try); else
    as `logger.wandb.offline` (`asked`) says; null: offline unless WANDB_MODE says otherwise, or a
    `wandb agent` started the run (its sweep lives on the server). `wandb sync` uploads offline
    runs later."""
    if os.environ.get("WANDB_MODE") == "disabled":
        return "disabled"
    if asked is not None:
        return "offline" if asked else "online"
    default = "online" if os.environ.get("WANDB_SWEEP_ID") else "offline"
    return "offline" if os.environ.get("WANDB_MODE", default) in ("offline", "dryrun") else "online"


def build_loggers(settings: Sequence[LoggerSettings], run_dir: Path, tags: list[str],
                  config: Mapping[str, Any], group: str | None = None,
                  resume_step: int | None = None, wandb_run_id: str | None = None,
                  name: str | None = None) -> list[Logger]:
    """One logger per entry of the `logger` group, all writing under `run_dir`.

    A resumed run (`resume_step`: the checkpoint's step) goes on in its loggers' history: the CSV
    log drops rows logged after that step, TensorBoard hides events from that step on
    (`purge_step`), and W&B continues the run `wandb_run_id` (the one the resumed run recorded)
    instead of starting a second one. W&B runs get `tags` and, unless the config names them,
    `group` (the sweep) and `name` (a sweep's run: its folder and command-line overrides), so
    W&B's compare views line up the runs of a sweep.
    """
    loggers: list[Logger] = []
    try:
        for logger_settings in settings:
            loggers.append(_build_logger(logger_settings, run_dir, tags, config, group, resume_step,
                                         wandb_run_id, name))
    except BaseException:
        # a W&B run already started would stay open: the next job of a multirun would log into it
        finish_loggers(loggers, failed=True)
        raise
    return loggers


def _build_logger(logger_settings: LoggerSettings, run_dir: Path, tags: list[str], config: Mapping[str, Any],
                  group: str | None, resume_step: int | None, wandb_run_id: str | None,
                  name: str | None) -> Logger:
    entry = dict(logger_settings.options)
    if logger_settings.kind == "wandb":
        mode = wandb_mode(entry.get("offline"))
        resumed = {"id": wandb_run_id, "resume": "allow"} if wandb_run_id else {}
        # disabled is not passed as offline: Lightning's offline logger sets WANDB_MODE=dryrun for the
        # whole process, which then wrote every later run of a sweep offline
        logger = instantiate(entry, save_dir=str(run_dir), offline=mode == "offline",
                             tags=[*tags, *(entry.get("tags") or [])], group=entry.get("group") or group,
                             name=entry.get("name") or name, **resumed,
                             **({"mode": mode} if mode != "offline" else {}))  # over WANDB_MODE too
        if rank_zero_only.rank == 0:  # other DDP ranks get a stand-in with no `config`
            try:
                logger.experiment.config.update(dict(config), allow_val_change=True)
            except BaseException:
                finish_loggers([logger], failed=True)  # the W&B run has started: close it
                raise
        return logger
    if logger_settings.kind == "csv":  # the project's ResumingCSVLogger
        return instantiate(entry, save_dir=str(run_dir), resume_step=resume_step)
    if logger_settings.kind == "tensorboard" and resume_step is not None:
        return instantiate(entry, save_dir=str(run_dir), purge_step=resume_step)
    return instantiate(entry, save_dir=str(run_dir))


def wandb_run_id(loggers: list[Logger]) -> str | None:
    """The id of the run's W&B run (recorded in metrics.json, so a resume continues it)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
            return str(logger.experiment.id)
    return None


def record_summary(loggers: list[Logger], summary: RunSummary) -> None:
    """Final test scores and run facts as the W&B run's summary (the columns of its runs table)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
            logger.experiment.summary.update(
                {**{f"test/{k}": v for k, v in summary.test.items()}, "status": summary.status,
                 "best_val_cider": summary.best_val_cider, "epochs": summary.epochs,
                 "train_time_s": summary.train_time_s})


def log_examples(loggers: list[Logger], examples: list[dict[str, Any]]) -> None:
    """A W&B table of test images: the image, the generated caption, the references, the attention."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            table = wandb.Table(columns=["image_id", "image", "generated", "references", "attention"])
            for example in examples:
                table.add_data(example["image_id"],
                               wandb.Image(example["image"]) if example.get("image") else None,
                               example["caption"], "\n".join(example["references"]),
                               wandb.Image(example["figure"]) if example.get("figure") else None)
            # The figures also as plain images: wandb 0.31 writes an offline run's table without
            # its image files, but keeps these.
            figures = [wandb.Image(e["figure"], caption=f"{e['image_id']}: {e['caption']}")
                       for e in examples if e.get("figure")]
            logger.experiment.log({"test/examples": table, "test/attention": figures})


def finish_loggers(loggers: list[Logger], failed: bool = False) -> None:
    """Close W&B runs, so the next job of a multirun starts a new run instead of reusing this."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            try:
                wandb.finish(exit_code=1 if failed else 0)
            except Exception as error:  # W&B unreachable: the run's own files stand, its lease goes back
                log.warning("the W&B run was not closed cleanly: %s: %s", type(error).__name__, error)
