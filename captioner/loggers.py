"""Experiment loggers from the `logger=` config group: csv (default), tensorboard, wandb."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger, WandbLogger


def build_loggers(logger_cfg: DictConfig | None, run_dir: Path, tags: list[str],
                  config: dict[str, Any]) -> list[Logger]:
    """One logger per entry of `logger_cfg`, all writing under `run_dir`."""
    loggers = []
    for entry in (logger_cfg or {}).values():
        if entry.get("_target_", "").endswith("WandbLogger"):
            # Offline unless the user asks otherwise through WANDB_MODE; `wandb sync` uploads later.
            offline = entry.get("offline")
            if offline is None:
                offline = os.environ.get("WANDB_MODE", "offline") in ("offline", "disabled", "dryrun")
            logger = instantiate(entry, save_dir=str(run_dir), offline=offline,
                                 tags=[*tags, *(entry.get("tags") or [])])
            logger.experiment.config.update(config, allow_val_change=True)
        else:
            logger = instantiate(entry, save_dir=str(run_dir))
        loggers.append(logger)
    return loggers


def finish_loggers(loggers: list[Logger], failed: bool = False) -> None:
    """Close W&B runs, so the next job of a multirun starts a new run instead of reusing this."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish(exit_code=1 if failed else 0)
