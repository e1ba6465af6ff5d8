"""run(cfg): one configuration through the pipeline: features -> batches -> fit -> test -> run folder."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from captioner.data.datamodule import CaptionDataModule
from captioner.features.backbones import ARCHITECTURES, weights_source
from captioner.features.cache import prepare
from captioner.run_folder import RunFolder
from captioner.runs.callbacks import run_callbacks
from captioner.runs.config_checks import check_config
from captioner.runs.config_paths import with_absolute_paths
from captioner.runs.console_summary import print_summary
from captioner.runs.ddp_under_hydra import ddp_job
from captioner.runs.fast_path import FastPath, fast_path
from captioner.runs.gpu_lease import lease_for_run
from captioner.runs.loggers import build_loggers, finish_loggers, log_examples, record_summary
from captioner.runs.resume import resolve_checkpoint, resumable_step
from captioner.runs.run_outputs import write_run_outputs
from captioner.runs.third_party_noise import quiet_known_noise
from captioner.training.checkpoint_files import AtomicCheckpointIO
from captioner.training.module import CaptionModule
from captioner.training.preemption import Preempted, PreemptionSignals
from captioner.training.self_critical_stage import fit_self_critical, skips_cross_entropy, stage_summary

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None,
        base_dir: Path | None = None, group: str | None = None) -> dict[str, Any]:
    """Train and test one configuration; everything it writes goes under `run_dir`.

    `overrides` are the command line's (to find a run to resume), `base_dir` is where relative
    paths in the config start (the directory the user launched from), `group` names the sweep
    this run belongs to (W&B groups its runs).
    """
    folder, base_dir = RunFolder(run_dir), Path(base_dir or os.getcwd())
    folder.path.mkdir(parents=True, exist_ok=True)
    earlier_run = folder.metrics.is_file()  # resuming in place: an error found up front leaves it as it was
    started = False
    summary: dict[str, Any] = {"status": "running", "config": _config_summary(cfg),
                               "pid": os.getpid(), "host": socket.gethostname()}
    loggers: list = []
    began = time.perf_counter()
    held = ExitStack()
    signals = PreemptionSignals()  # installed while training runs (MidEpochCheckpoint)
    try:
        # Up front, before anything is written: a typo must not cost an extraction and a fit, and a
        # resume that cannot go on must not touch the run it would resume.
        cfg = with_absolute_paths(cfg, base_dir)
        check_config(cfg)
        resume = resolve_checkpoint(cfg.get("ckpt_path"), folder, overrides or [], base_dir)
        resume_step = resumable_step(resume, cfg) if resume is not None else None
        quiet_known_noise()
        _write_metrics(folder, summary)  # `running` for the report
        started = True
        folder.drop_config_backup()
        torch.set_float32_matmul_precision("high")
        held.enter_context(ddp_job())
        gpus = held.enter_context(lease_for_run(cfg.trainer.accelerator, cfg.trainer.devices))

        pl.seed_everything(cfg.seed, workers=True)
        records, features_path = prepare(cfg, device=f"cuda:{gpus[0]}" if gpus else None)
        summary["features"] = str(features_path)  # evaluate finds it here, also for a killed run
        _write_metrics(folder, summary)
        # again: extracting features draws random numbers, reusing a file does not; training must
        # not depend on which of the two happened
        pl.seed_everything(cfg.seed, workers=True)

        fast = fast_path(cfg, gpus)
        datamodule = _datamodule(cfg, features_path, fast)
        if rank_zero_only.rank == 0:
            datamodule.vocabulary.save(folder.vocabulary)
        module = _module(cfg, datamodule, fast)
        loggers = build_loggers(cfg.get("logger"), folder.path, _tags(cfg),
                                OmegaConf.to_container(cfg, resolve=True), group=group,
                                resume_step=resume_step)
        callbacks = run_callbacks(cfg, folder, signals, with_loggers=bool(loggers))
        trainer_options = {**cfg.trainer, **({"devices": gpus} if gpus else {})}
        if not sys.stdout.isatty():  # a log file gets ProgressLines' plain lines, not a bar's last frame
            trainer_options["enable_progress_bar"] = False

        def make_trainer(**stage_options: Any) -> pl.Trainer:  # one per stage (cross-entropy, SCST)
            return pl.Trainer(**{**trainer_options, **stage_options}, default_root_dir=folder.path,
                              logger=loggers or False, callbacks=callbacks.all,
                              plugins=[AtomicCheckpointIO()])

        fit_began = time.perf_counter()
        trainer = make_trainer()
        # weights_only: resuming never executes pickled code from a checkpoint file
        if not skips_cross_entropy(cfg.scst, resume):
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        callbacks.end_cross_entropy()
        if cfg.scst.enabled:
            trainer = fit_self_critical(cfg.scst, module, datamodule, make_trainer, resume,
                                        cross_entropy=trainer)
        signals.restore()
        if signals.received:  # a signal in the last validation: last.ckpt is complete, the test is not run
            raise Preempted(signals.received, str(folder.last_checkpoint))
        train_time = time.perf_counter() - fit_began
        curve = list(callbacks.history.epochs)  # before test(): loading the best checkpoint restores it
        best = callbacks.best.best_model_path or None
        trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)

        summary.update(
            status="completed",
            test=module.last_scores["test"],
            best_val_cider=_as_float(callbacks.best.best_model_score),
            epochs=int(trainer.current_epoch),
            stages=stage_summary(curve),
            history=curve,
            train_time_s=round(train_time, 1),
            test_decode_s=round(module.test_decode_s, 2),
            test_captions_per_s=round(len(module.last_captions["test"]) / max(module.test_decode_s, 1e-9), 1),
            wall_time_s=round(time.perf_counter() - began, 1),
            features=str(features_path),
            checkpoint=best,
            resumed_from=str(resume) if resume else None,
        )
        record_summary(loggers, summary)
        if trainer.is_global_zero:
            examples = write_run_outputs(folder, module, datamodule, records, cfg.examples)
            log_examples(loggers, examples)
            _write_metrics(folder, summary)
            print_summary(summary, examples)
        return summary
    except BaseException as error:
        if earlier_run and not started:
            folder.restore_config_backup()  # Hydra's .hydra/ of the run as it was
        else:
            _record_failure(folder, summary, error, signals, began)
        raise
    finally:
        signals.restore()
        finish_loggers(loggers, failed=summary["status"] != "completed")
        held.close()


def _datamodule(cfg: DictConfig, features_path: Path, fast: FastPath) -> CaptionDataModule:
    datamodule = CaptionDataModule(
        features_path, batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers, in_memory=cfg.data.in_memory,
        max_caption_length=cfg.text.max_caption_length, max_words=cfg.text.max_words,
        min_word_count=cfg.text.min_word_count, val_split=cfg.dataset.val_split,
        test_split=cfg.dataset.test_split, shuffle_seed=cfg.seed,
        static_caption_length=fast.static_caption_length, resident_device=fast.resident_device)
    datamodule.setup()
    return datamodule


def _module(cfg: DictConfig, datamodule: CaptionDataModule, fast: FastPath) -> CaptionModule:
    return CaptionModule(vocabulary=datamodule.vocabulary.words, feature_dim=datamodule.feature_dim,
                         rnn=cfg.rnn.cell, max_caption_length=cfg.text.max_caption_length,
                         cnn=datamodule.features.cnn_record(),
                         decode=OmegaConf.to_container(cfg.decode), spice=cfg.get("spice", False),
                         meteor=cfg.get("meteor", True),
                         **{**OmegaConf.to_container(cfg.model, resolve=True), "compile": fast.compiled})


def _record_failure(folder: RunFolder, summary: dict[str, Any], error: BaseException,
                    signals: PreemptionSignals, began: float) -> None:
    """metrics.json says how the run ended: preempted (and how to resume) or failed (and why).

    A preemption is re-raised as `Preempted` (a SystemExit with code 128 + the signal)."""
    last = folder.last_checkpoint
    if signals.received and not isinstance(error, Preempted):  # e.g. Lightning's SIGTERMException
        error = Preempted(signals.received, str(last) if last.is_file() else None)
    if isinstance(error, Preempted):
        summary.update(status="preempted", error=str(error), checkpoint=error.checkpoint,
                       resume="the same command with ckpt_path=last (and hydra.run.dir=<this folder> "
                              "to go on in this folder)")
    else:
        summary.update(status="failed", error=f"{type(error).__name__}: {error}")
    summary.update(wall_time_s=round(time.perf_counter() - began, 1))
    _write_metrics(folder, summary)
    if isinstance(error, Preempted):
        log.warning("%s; resume with %s", error, summary["resume"])
        raise error from None


def _write_metrics(folder: RunFolder, summary: dict[str, Any]) -> None:
    if rank_zero_only.rank == 0:  # one writer under DDP
        folder.write_metrics(summary)


def _tags(cfg: DictConfig) -> list[str]:
    return [f"dataset={cfg.dataset.name}", f"cnn={cfg.cnn.name}", f"rnn={cfg.rnn.cell}"]


def _as_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _config_summary(cfg: DictConfig) -> dict[str, Any]:
    known = cfg.cnn.name in ARCHITECTURES  # an unknown name is check_config's to report, with the fix
    return {"dataset": cfg.dataset.name, "cnn": cfg.cnn.name, "rnn": cfg.rnn.cell,
            "cnn_weights": weights_source(cfg.cnn).label() if known else cfg.cnn.get("weights"),
            "seed": cfg.seed, "max_epochs": cfg.trainer.max_epochs,
            **OmegaConf.to_container(cfg.model, resolve=True)}
