"""run(cfg): prepare features -> fit -> test -> write the run's results."""

from __future__ import annotations

import json
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
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, RichProgressBar
from pytorch_lightning.utilities import rank_zero_only

from captioner.attention_figure import plot_attention
from captioner.backbones import ARCHITECTURES, weights_identity
from captioner.checkpoint_io import AtomicCheckpointIO
from captioner.config_checks import check_config
from captioner.datamodule import CaptionDataModule
from captioner.ddp_under_hydra import ddp_job
from captioner.gpu_lease import lease_for_run
from captioner.history import ValidationHistory
from captioner.loggers import build_loggers, finish_loggers, log_examples, record_summary
from captioner.mid_epoch_checkpoint import MidEpochCheckpoint
from captioner.model.compiled import use_compile
from captioner.module import CaptionModule
from captioner.paths import write_atomically
from captioner.preemption import Preempted, PreemptionSignals
from captioner.prepare import prepare
from captioner.progress_lines import ProgressLines
from captioner.resume import resolve_checkpoint
from captioner.scst_stage import fit_self_critical, skips_cross_entropy, stage_summary
from captioner.sources import ImageRecord
from captioner.summary import print_summary
from captioner.third_party_noise import quiet_known_noise
from captioner.training_order import RandomState, RestoreTrainingOrder

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None,
        base_dir: Path | None = None, group: str | None = None) -> dict[str, Any]:
    """Train and test one configuration; everything it writes goes under `run_dir`.

    `overrides` are the command line's (to find a run to resume), `base_dir` is where relative
    paths in the config start (the directory the user launched from), `group` names the sweep
    this run belongs to (W&B groups its runs).
    """
    run_dir, base_dir = Path(run_dir), Path(base_dir or os.getcwd())
    run_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"status": "running", "config": _config_summary(cfg),
                               "pid": os.getpid(), "host": socket.gethostname()}
    loggers: list = []
    began = time.perf_counter()
    held = ExitStack()
    signals = PreemptionSignals()  # installed while training runs (MidEpochCheckpoint)
    last_checkpoint = run_dir / "checkpoints" / "last.ckpt"
    try:
        check_config(cfg, base_dir)  # before any work: a typo must not cost an extraction and a fit
        quiet_known_noise()
        if rank_zero_only.rank == 0:  # `running` for the report, and where the features are
            _write_json(run_dir / "metrics.json", summary)
        torch.set_float32_matmul_precision("high")
        pl.seed_everything(cfg.seed, workers=True)
        resume = resolve_checkpoint(cfg.get("ckpt_path"), run_dir, overrides or [], base_dir)
        held.enter_context(ddp_job())
        gpus = held.enter_context(lease_for_run(cfg.trainer.accelerator, cfg.trainer.devices))
        records, features_path = prepare(cfg, base_dir, device=f"cuda:{gpus[0]}" if gpus else None)
        summary["features"] = str(features_path)  # evaluate finds it here, also for a killed run
        # again: extracting features draws random numbers, reusing a file does not; training must
        # not depend on which of the two happened
        pl.seed_everything(cfg.seed, workers=True)
        if rank_zero_only.rank == 0:
            _write_json(run_dir / "metrics.json", summary)

        datamodule = CaptionDataModule(
            features_path, batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch_size,
            num_workers=cfg.data.num_workers, in_memory=cfg.data.in_memory,
            max_caption_length=cfg.text.max_caption_length, max_words=cfg.text.max_words,
            min_word_count=cfg.text.min_word_count, val_split=cfg.dataset.val_split,
            test_split=cfg.dataset.test_split, shuffle_seed=cfg.seed,
            **_fast_path(cfg, gpus))
        datamodule.setup()
        if rank_zero_only.rank == 0:
            datamodule.vocabulary.save(run_dir / "vocabulary.json")
        module = CaptionModule(vocabulary=datamodule.vocabulary.words,
                               feature_dim=datamodule.feature_dim, rnn=cfg.rnn.cell,
                               max_caption_length=cfg.text.max_caption_length,
                               encoder=datamodule.features.encoder(),
                               decode=OmegaConf.to_container(cfg.decode), spice=cfg.get("spice", False),
                               **{**OmegaConf.to_container(cfg.model, resolve=True),
                                  "compile": datamodule.static_caption_length is not None})

        tags = [f"dataset={cfg.dataset.name}", f"cnn={cfg.cnn.name}", f"rnn={cfg.rnn.cell}"]
        loggers = build_loggers(cfg.get("logger"), run_dir, tags,
                                OmegaConf.to_container(cfg, resolve=True), group=group)
        checkpoints = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:02d}",
                                      monitor="val/cider", mode="max", auto_insert_metric_name=False)
        # Lightning 2.6's save_last writes last.ckpt only at epochs that improved the monitored
        # score, so a resume would repeat every epoch since the best: a second, unmonitored
        # callback rewrites last.ckpt after every validation (listed after `checkpoints`, so
        # the best score it records is current).
        latest = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename=last_checkpoint.stem,
                                 monitor=None, save_top_k=1, enable_version_counter=False)
        history = ValidationHistory()
        every = cfg.get("checkpoint", {}).get("every_minutes")
        terminal = sys.stdout.isatty()
        callbacks: list = [checkpoints, latest, history, RandomState(), RestoreTrainingOrder(),
                           MidEpochCheckpoint(last_checkpoint, every, signals),
                           ProgressLines(None if terminal else cfg.get("progress_every_s", 60))]
        if cfg.trainer.enable_progress_bar and terminal:
            callbacks.append(RichProgressBar())
        if loggers:  # `lr-Adam` in every logger: where a cosine or plateau schedule has got to
            callbacks.append(LearningRateMonitor())
        patience = cfg.get("early_stopping", {}).get("patience")
        stopper = EarlyStopping("val/cider", mode="max", patience=patience) if patience else None
        if stopper:  # cross-entropy stage only: removed again before self-critical training
            callbacks.append(stopper)
        trainer_options = {**cfg.trainer, **({"devices": gpus} if gpus else {})}
        if not terminal:  # a log file gets ProgressLines' plain lines, not a bar's last frame
            trainer_options["enable_progress_bar"] = False

        def make_trainer(**stage_options: Any) -> pl.Trainer:  # one per stage (cross-entropy, SCST)
            return pl.Trainer(**{**trainer_options, **stage_options}, default_root_dir=run_dir,
                              logger=loggers or False, callbacks=callbacks, plugins=[AtomicCheckpointIO()])

        trainer = make_trainer()

        fit_began = time.perf_counter()
        # weights_only: resuming never executes pickled code from a checkpoint file
        if not skips_cross_entropy(cfg.scst, resume):
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        if stopper:
            callbacks.remove(stopper)
        if cfg.scst.enabled:
            trainer = fit_self_critical(cfg.scst, module, datamodule, make_trainer, resume, base_dir,
                                        cross_entropy=trainer)
        signals.restore()
        if signals.received:  # a signal in the last validation: last.ckpt is complete, the test is not run
            raise Preempted(signals.received, str(last_checkpoint))
        train_time = time.perf_counter() - fit_began
        curve = list(history.epochs)  # before test(): loading the best checkpoint restores its history
        best = checkpoints.best_model_path or None
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False,
                     weights_only=True)

        summary.update(
            status="completed",
            test=module.last_scores["test"],
            best_val_cider=_as_float(checkpoints.best_model_score),
            epochs=int(trainer.current_epoch),
            stages=stage_summary(curve),
            history=curve,
            train_time_s=round(train_time, 1),
            wall_time_s=round(time.perf_counter() - began, 1),
            features=str(features_path),
            checkpoint=best,
            resumed_from=str(resume) if resume else None,
        )
        record_summary(loggers, summary)
        if trainer.is_global_zero:
            examples = _write_outputs(run_dir, module, datamodule, records, cfg.examples)
            log_examples(loggers, examples)
            _write_json(run_dir / "metrics.json", summary)
            print_summary(summary, examples)
        return summary
    except BaseException as error:
        if signals.received and not isinstance(error, Preempted):  # e.g. Lightning's SIGTERMException
            error = Preempted(signals.received, str(last_checkpoint) if last_checkpoint.is_file() else None)
        if isinstance(error, Preempted):
            summary.update(status="preempted", error=str(error), checkpoint=error.checkpoint,
                           resume="the same command with ckpt_path=last (and hydra.run.dir=<this folder> "
                                  "to go on in this folder)")
        else:
            summary.update(status="failed", error=f"{type(error).__name__}: {error}")
        summary.update(wall_time_s=round(time.perf_counter() - began, 1))
        if rank_zero_only.rank == 0:
            _write_json(run_dir / "metrics.json", summary)
        if isinstance(error, Preempted):
            log.warning("%s; resume with %s", error, summary["resume"])
            raise error from None
        raise
    finally:
        signals.restore()
        finish_loggers(loggers, failed=summary["status"] != "completed")
        held.close()


def _write_outputs(run_dir: Path, module: CaptionModule, datamodule: CaptionDataModule,
                   records: list[ImageRecord], examples: int) -> list[dict[str, Any]]:
    """captions.json for every test image, and attention figures of the first few."""
    features = datamodule.features
    references = datamodule.references(datamodule.eval_split("test"))
    captions = [
        {"image_id": features.image_ids[index], "caption": text, "references": references[index]}
        for index, text in module.last_captions["test"].items()
    ]
    _write_json(run_dir / "captions.json", captions)

    path_of = {r.image_id: r.path for r in records}
    grid = tuple(features.attrs.get("grid", (1, features.regions)))
    shown = []
    for index, weights in list(module.test_attention.items())[:examples]:
        image_id = features.image_ids[index]
        words = module.last_captions["test"][index].split() + ["<end>"]
        weights = weights[: len(words)].numpy()
        figure = None
        if Path(path_of.get(image_id, "")).is_file():
            figure = plot_attention(path_of[image_id], words[: len(weights)], weights, grid,
                                    run_dir / "plots" / f"attention_{index}.png")
        shown.append({"image_id": image_id, "caption": module.last_captions["test"][index],
                      "references": references[index], "figure": str(figure) if figure else None,
                      "image": str(path_of[image_id]) if figure else None})
    _write_examples_page(run_dir, shown)
    return shown


def _write_examples_page(run_dir: Path, examples: list[dict[str, Any]]) -> None:
    """examples.md: what W&B's examples table shows, for anyone reading the run directory."""
    lines = ["# Test examples", ""]
    for example in examples:
        lines += [f"## {example['image_id']}", ""]
        if example["figure"]:
            lines += [f"![attention]({Path(example['figure']).relative_to(run_dir)})", ""]
        lines += [f"**generated:** {example['caption']}", "", "references:", ""]
        lines += [f"- {reference}" for reference in example["references"]] + [""]
    write_atomically(run_dir / "examples.md", "\n".join(lines))


def _fast_path(cfg: DictConfig, gpus: list[int] | None) -> dict[str, Any]:
    """The datamodule's share of the fast GPU step (issue 11): static shapes where the training
    step is compiled (`model.compile`), training features on the GPU where one GPU trains."""
    accelerator = cfg.trainer.accelerator
    on_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    setting = cfg.model.get("compile", "auto")
    if str(setting).lower() == "auto" and cfg.trainer.get("devices", 1) != 1:
        setting = False  # auto compiles single-device runs only: DDP's hooks around a graph are untested
    compiled = use_compile(setting, "cuda" if on_cuda else "cpu")
    resident = on_cuda and gpus is not None and len(gpus) == 1 and cfg.data.get("resident", True)
    return {"static_caption_length": cfg.text.max_caption_length + 2 if compiled else None,
            "resident_device": f"cuda:{gpus[0]}" if resident else None}


def _as_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _config_summary(cfg: DictConfig) -> dict[str, Any]:
    known = cfg.cnn.name in ARCHITECTURES  # an unknown name is check_config's to report, with the fix
    return {"dataset": cfg.dataset.name, "cnn": cfg.cnn.name, "rnn": cfg.rnn.cell,
            "cnn_weights": weights_identity(cfg.cnn) if known else cfg.cnn.get("weights"), "seed": cfg.seed,
            "max_epochs": cfg.trainer.max_epochs, **OmegaConf.to_container(cfg.model, resolve=True)}


def _write_json(path: Path, value: Any) -> None:
    write_atomically(path, json.dumps(value, indent=2))

