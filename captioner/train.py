"""run(cfg): prepare features -> fit -> test -> write the run's results."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
from pytorch_lightning.utilities import rank_zero_only

from captioner.attention_figure import plot_attention
from captioner.checkpoint_io import AtomicCheckpointIO
from captioner.datamodule import CaptionDataModule
from captioner.ddp_under_hydra import ddp_job
from captioner.gpu_lease import lease_for_run
from captioner.history import ValidationHistory
from captioner.loggers import build_loggers, finish_loggers, log_examples, record_summary
from captioner.module import CaptionModule
from captioner.paths import write_atomically
from captioner.prepare import prepare
from captioner.resume import resolve_checkpoint
from captioner.sources import ImageRecord
from captioner.summary import print_summary

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
    summary: dict[str, Any] = {"status": "running", "config": _config_summary(cfg)}
    loggers: list = []
    began = time.perf_counter()
    held = ExitStack()
    try:
        torch.set_float32_matmul_precision("high")
        pl.seed_everything(cfg.seed, workers=True)
        resume = resolve_checkpoint(cfg.get("ckpt_path"), run_dir, overrides or [], base_dir)
        held.enter_context(ddp_job())
        gpus = held.enter_context(lease_for_run(cfg.trainer.accelerator, cfg.trainer.devices))
        records, features_path = prepare(cfg, base_dir, device=f"cuda:{gpus[0]}" if gpus else None)

        datamodule = CaptionDataModule(
            features_path, batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch_size,
            num_workers=cfg.data.num_workers, in_memory=cfg.data.in_memory,
            max_caption_length=cfg.text.max_caption_length, max_words=cfg.text.max_words,
            min_word_count=cfg.text.min_word_count, val_split=cfg.dataset.val_split,
            test_split=cfg.dataset.test_split)
        datamodule.setup()
        if rank_zero_only.rank == 0:
            datamodule.vocabulary.save(run_dir / "vocabulary.json")
        module = CaptionModule(vocabulary=datamodule.vocabulary.words,
                               feature_dim=datamodule.feature_dim, rnn=cfg.rnn.cell,
                               max_caption_length=cfg.text.max_caption_length,
                               encoder=datamodule.features.encoder(),
                               decode=OmegaConf.to_container(cfg.decode), spice=cfg.get("spice", False),
                               **cfg.model)

        tags = [f"dataset={cfg.dataset.name}", f"cnn={cfg.cnn.name}", f"rnn={cfg.rnn.cell}"]
        loggers = build_loggers(cfg.get("logger"), run_dir, tags,
                                OmegaConf.to_container(cfg, resolve=True), group=group)
        checkpoints = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:02d}",
                                      monitor="val/cider", mode="max", save_last=True,
                                      auto_insert_metric_name=False)
        history = ValidationHistory()
        callbacks: list = [checkpoints, history]
        if cfg.trainer.enable_progress_bar and sys.stdout.isatty():
            callbacks.append(RichProgressBar())
        trainer_options = {**cfg.trainer, **({"devices": gpus} if gpus else {})}
        trainer = pl.Trainer(**trainer_options, default_root_dir=run_dir, logger=loggers or False,
                             callbacks=callbacks, plugins=[AtomicCheckpointIO()])

        fit_began = time.perf_counter()
        # weights_only: resuming never executes pickled code from a checkpoint file
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
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
        summary.update(status="failed", error=f"{type(error).__name__}: {error}",
                       wall_time_s=round(time.perf_counter() - began, 1))
        if rank_zero_only.rank == 0:
            _write_json(run_dir / "metrics.json", summary)
        raise
    finally:
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


def _as_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _config_summary(cfg: DictConfig) -> dict[str, Any]:
    return {"dataset": cfg.dataset.name, "cnn": cfg.cnn.name, "rnn": cfg.rnn.cell,
            "cnn_weights": cfg.cnn.get("weights"), "seed": cfg.seed,
            "max_epochs": cfg.trainer.max_epochs, **OmegaConf.to_container(cfg.model, resolve=True)}


def _write_json(path: Path, value: Any) -> None:
    write_atomically(path, json.dumps(value, indent=2))

