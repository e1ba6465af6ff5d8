"""run(cfg): one configuration through the pipeline: settings -> features -> batches -> fit -> test ->
run folder. The config is read once, into typed settings (captioner/settings/); the stages get those."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import sys
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from captioner.data.datamodule import CaptionDataModule
from captioner.features.backbones import build_backbone, split_backbone, weights_source
from captioner.features.cache import prepare
from captioner.launch.ddp_under_hydra import ddp_job
from captioner.launch.gpu_lease import lease_for_run
from captioner.launch.third_party_noise import quiet_known_noise
from captioner.paths import write_atomically
from captioner.records.run_folder import RunFolder
from captioner.records.run_summary import RunSummary
from captioner.runs.console_summary import print_summary
from captioner.runs.provenance import CodeState, code_before_resume, code_state, provenance
from captioner.runs.resume import (
    check_resumable,
    check_vocabulary,
    requeued_ckpt_path,
    resolve_checkpoint_of_rank,
)
from captioner.runs.run_outputs import write_run_outputs
from captioner.settings import RunSettings, read_settings
from captioner.trainer_setup.callbacks import run_callbacks
from captioner.trainer_setup.fast_path import FastPath, fast_path
from captioner.trainer_setup.loggers import (
    build_loggers,
    finish_loggers,
    log_examples,
    record_summary,
    wandb_run_id,
)
from captioner.training.checkpoint_files import AtomicCheckpointIO
from captioner.training.checkpoint_record import CheckpointRecord
from captioner.training.lightning_seams import warn_if_untested_lightning
from captioner.training.module import CaptionModule
from captioner.training.preemption import Preempted, PreemptionSignals, agreed_signal
from captioner.training.self_critical_stage import fit_self_critical, skips_cross_entropy, stage_summary

log = logging.getLogger(__name__)


def _wandb_name(folder: RunFolder, overrides: list[str] | None, in_sweep: bool) -> str | None:
    """A sweep's run in W&B: its folder (the report's run column) and its command-line overrides, in
    place of a random name; None (W&B's own) for a single run."""
    if not in_sweep:
        return None
    shown = [o for o in overrides or [] if not o.startswith(("ckpt_path=", "hydra."))]
    return " ".join([folder.path.name, *shown])[:128]


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None,
        base_dir: Path | None = None, group: str | None = None, in_sweep: bool = False,
        config_name: str | None = None) -> RunSummary:
    """Train and test one configuration; everything it writes goes under `run_dir`.

    `overrides` and `config_name` are the command line's (to find a run to resume), `base_dir` is
    where relative paths in the config start (the directory the user launched from), `group` names
    the sweep this run belongs to (W&B groups its runs), `in_sweep`: one run of a multirun.
    """
    folder, base_dir = RunFolder(run_dir), Path(base_dir or os.getcwd())
    folder.path.mkdir(parents=True, exist_ok=True)
    earlier_run = folder.metrics.is_file()  # resuming in place: an error found up front leaves it as it was
    started = False
    summary = RunSummary(status="running", pid=os.getpid(), host=socket.gethostname())
    loggers: list = []
    began = time.perf_counter()
    held = ExitStack()
    signals = PreemptionSignals()  # ours from the start of training to the run's end (MidEpochCheckpoint)
    code = code_state()  # now: the tree may change while a long run trains
    try:
        signals.stop_at_once()  # until training starts: nothing to checkpoint, so stop where it is
        # Up front, before anything is written: a typo must not cost an extraction and a fit, and a
        # resume that cannot go on must not touch the run it would resume.
        settings = read_settings(cfg, base_dir)
        settings = replace(settings, ckpt_path=requeued_ckpt_path(settings.ckpt_path, folder))
        summary.config = _config_summary(settings)
        summary.settings_key = settings_key(cfg, base_dir)
        if settings.ckpt_path == "last" and (done := _completed_as_asked(folder, summary.settings_key)):
            log.warning("%s: this run completed with these settings; kept as it is", folder.path)
            if rank_zero_only.rank == 0:
                folder.drop_config_backup()
                folder.clear_refusal()
            return done
        resume = resolve_checkpoint_of_rank(settings.ckpt_path, folder, overrides or [], base_dir, in_sweep,
                                            config_name)
        if resume is not None:
            check_resumable(resume, settings)
        # read before this run's summary replaces it, and kept if this run fails before its loggers exist
        earlier = _earlier_run(resume) if settings.ckpt_path == "last" else None
        earlier_wandb_run = earlier[1].wandb_run_id if earlier is not None else None
        summary.wandb_run_id = earlier_wandb_run
        quiet_known_noise()
        if rank_zero_only.rank == 0:  # its private internals are used (training/lightning_seams.py)
            warn_if_untested_lightning()
        if earlier is not None:  # until this process records its own code (below): a resume that fails
            # before then must not leave a summary that forgot the code the run trained with so far
            summary.provenance = {"code_before_resume": code_before_resume(earlier[1].provenance, {})}
        _write_metrics(folder, summary)  # `running` for the report
        started = True
        _keep_earlier_code(folder, earlier, code)
        _record_code(folder, code)
        if rank_zero_only.rank == 0:  # the rank that made it (launch/config_backup.py)
            folder.drop_config_backup()
            folder.clear_refusal()
        torch.set_float32_matmul_precision("high")
        held.enter_context(ddp_job(str(resume.path) if resume is not None else None))
        gpus = held.enter_context(lease_for_run(settings.trainer.accelerator, settings.trainer.devices))

        pl.seed_everything(settings.seed, workers=True)
        records, features_path = prepare(settings, device=f"cuda:{gpus[0]}" if gpus else None)
        summary.features = str(features_path)  # evaluate finds it here, also for a killed run
        _write_metrics(folder, summary)
        # again: extracting features draws random numbers, reusing a file does not; training must
        # not depend on which of the two happened
        pl.seed_everything(settings.seed, workers=True)

        train_captions = sum(len(r.captions) for r in records if r.split == "train")
        fast = fast_path(settings, gpus, train_captions)
        datamodule = _datamodule(settings, features_path, fast)
        if resume is not None:
            check_vocabulary(resume, datamodule.vocabulary)
        if rank_zero_only.rank == 0:
            datamodule.vocabulary.save(folder.vocabulary)
        module = _module(settings, datamodule, fast)
        loggers = build_loggers(settings.loggers, folder.path, settings.tags, settings.config, group=group,
                                resume_step=resume.logger_step if resume is not None else None,
                                wandb_run_id=earlier_wandb_run, name=_wandb_name(folder, overrides, in_sweep))
        summary.wandb_run_id = wandb_run_id(loggers)
        _write_metrics(folder, summary)
        callbacks = run_callbacks(settings, folder, signals, with_loggers=bool(loggers))
        trainer_options = {**settings.trainer.options, **({"devices": gpus} if gpus else {})}
        if not sys.stdout.isatty():  # a log file gets ProgressLines' plain lines, not a bar's last frame
            trainer_options["enable_progress_bar"] = False

        def make_trainer(**stage_options: Any) -> pl.Trainer:  # one per stage (cross-entropy, SCST)
            return pl.Trainer(**{**trainer_options, **stage_options}, default_root_dir=folder.path,
                              logger=loggers or False, callbacks=callbacks.all,
                              plugins=[AtomicCheckpointIO()])

        fit_began = time.perf_counter()
        trainer = make_trainer()
        summary.provenance = provenance(trainer.strategy.root_device, trainer.world_size, code)
        if earlier is not None and (history := code_before_resume(earlier[1].provenance, summary.provenance)):
            summary.provenance["code_before_resume"] = history  # part of it trained with that code
        _write_metrics(folder, summary)
        # weights_only: resuming never executes pickled code from a checkpoint file
        if not skips_cross_entropy(settings.scst, resume):
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume.path if resume else None,
                        weights_only=True)
        callbacks.end_cross_entropy()
        if settings.scst.enabled:
            callbacks.start_self_critical(settings.scst.patience)
            trainer = fit_self_critical(settings.scst, module, datamodule, make_trainer, resume,
                                        cross_entropy=trainer)
        # A signal in the last validation: last.ckpt is complete, the test is not run. Under DDP every
        # rank decides alike (one that reached rank 0 alone after the fit's last agreement left the
        # other ranks waiting in the test's collectives).
        if received := agreed_signal(trainer, signals.received or 0):
            raise Preempted(received, str(folder.last_checkpoint))
        train_time = time.perf_counter() - fit_began
        curve = list(callbacks.history.epochs)  # before test(): loading the best checkpoint restores it
        best = callbacks.best.best_model_path or None
        trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)

        summary = replace(
            summary,
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
            checkpoint=best,
            resumed_from=str(resume.path) if resume else None,
        )
        record_summary(loggers, summary)
        if trainer.is_global_zero:
            examples = write_run_outputs(folder, module, datamodule, records, settings.examples)
            log_examples(loggers, examples)
            _write_metrics(folder, summary)
            print_summary(summary, examples)
    except BaseException as error:
        if earlier_run and not started:
            if rank_zero_only.rank == 0:
                folder.restore_config_backup()  # Hydra's .hydra/ of the run as it was
                if in_sweep and isinstance(error, Exception):  # its metrics.json still says completed
                    folder.record_refusal(f"{type(error).__name__}: {error}")
        else:
            _record_failure(folder, summary, error, signals, began, in_sweep)
        raise
    finally:
        signals.restore()
        try:
            finish_loggers(loggers, failed=summary.status != "completed")
        finally:  # the GPU lease and the DDP variables go back whatever happens
            held.close()
    if signals.received:  # while it wrote its outputs: the run is complete, a sweep stops here
        log.warning("the run completed; stopping on %s", signal.Signals(signals.received).name)
        raise Preempted(signals.received)
    return summary


def _datamodule(settings: RunSettings, features_path: Path, fast: FastPath) -> CaptionDataModule:
    data, text, dataset = settings.data, settings.text, settings.dataset
    datamodule = CaptionDataModule(
        features_path, batch_size=data.batch_size, eval_batch_size=data.eval_batch_size,
        num_workers=data.num_workers, in_memory=data.in_memory,
        max_caption_length=text.max_caption_length, max_words=text.max_words,
        min_word_count=text.min_word_count, val_split=dataset.val_split,
        test_split=dataset.test_split, shuffle_seed=settings.seed,
        static_caption_length=fast.static_caption_length, resident_device=fast.resident_device)
    datamodule.setup()
    return datamodule


def _module(settings: RunSettings, datamodule: CaptionDataModule, fast: FastPath) -> CaptionModule:
    record = datamodule.features.cnn_record()
    cnn, top = settings.cnn, None
    if cnn.trainable_blocks:  # the pretrained blocks the features file stops before
        _, top = split_backbone(cnn.name, build_backbone(cnn), cnn.trainable_blocks)
    feature_dim = int(record["top_channels"]) if top is not None else datamodule.feature_dim
    return CaptionModule(vocabulary=datamodule.vocabulary.words, feature_dim=feature_dim,
                         rnn=settings.model.cell, max_caption_length=settings.text.max_caption_length,
                         cnn=record, decode=settings.decode.as_dict(),
                         spice=settings.spice, meteor=settings.meteor,
                         **settings.model.hyperparameters(), compile=fast.compiled, top=top)


def _record_failure(folder: RunFolder, summary: RunSummary, error: BaseException,
                    signals: PreemptionSignals, began: float, in_sweep: bool) -> None:
    """metrics.json says how the run ended: preempted (and how to resume) or failed (and why).

    A preemption is re-raised as `Preempted` (a SystemExit with code 128 + the signal)."""
    last = folder.last_checkpoint
    if isinstance(error, SIGTERMException) or (signals.received and not isinstance(error, Preempted)):
        # Lightning's handler alone, where it is in charge (before training starts)
        error = Preempted(signals.received or signal.SIGTERM, str(last) if last.is_file() else None)
    if isinstance(error, Preempted):
        summary.status, summary.error, summary.checkpoint = "preempted", str(error), error.checkpoint
        summary.resume = ("the same command with ckpt_path=last and hydra.sweep.dir=<this sweep's folder> "
                          "(its completed runs are kept, the others go on or start)" if in_sweep else
                          "the same command with ckpt_path=last (and hydra.run.dir=<this folder> "
                          "to go on in this folder)")
    else:
        summary.status, summary.error = "failed", f"{type(error).__name__}: {error}"
    summary.wall_time_s = round(time.perf_counter() - began, 1)
    _write_metrics(folder, summary)
    if isinstance(error, Preempted):
        log.warning("%s; resume with %s", error, summary.resume)
        raise error from None


def _record_code(folder: RunFolder, code: CodeState) -> None:
    """code.diff: the uncommitted changes the run trains with (none: no file), so that its
    numbers trace back to code; metrics.json's provenance names the commit they apply to."""
    if rank_zero_only.rank != 0:
        return
    if code.dirty:
        files = code.changed_files + list(code.left_out)
        named = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        log.warning("the checkout has uncommitted changes (%s); this run keeps them in %s",
                    named, folder.code_patch)
        write_atomically(folder.code_patch, code.patch or "")
    else:
        folder.code_patch.unlink(missing_ok=True)  # an earlier run's, in this folder


def _write_metrics(folder: RunFolder, summary: RunSummary) -> None:
    if rank_zero_only.rank == 0:  # one writer under DDP
        summary.write(folder.metrics)


def _earlier_run(resume: CheckpointRecord | None) -> tuple[RunFolder, RunSummary] | None:
    """The run `ckpt_path=last` goes on from (this folder's own, or the earlier run it found) and
    what it recorded, read before this run's summary replaces it: the resumed run continues its W&B
    run and records its code. A checkpoint named by its path is not one: it may be a warm start of
    another experiment, which must not write into that W&B run."""
    if resume is None:
        return None
    folder = RunFolder.of_checkpoint(resume.path)
    try:
        earlier = folder.summary()
    except ValueError:  # a half-written metrics.json: W&B starts a new run, the training goes on
        return None
    return (folder, earlier) if earlier is not None else None


def _keep_earlier_code(folder: RunFolder, earlier: tuple[RunFolder, RunSummary] | None,
                       code: CodeState) -> None:
    """A resumed run's earlier uncommitted changes, where this process trains other code: kept as
    code.before-resume.<sha>.diff (code.diff names this process's changes; metrics.json's
    `code_before_resume` names the earlier ones), so no code that trained the run is lost."""
    if rank_zero_only.rank != 0 or earlier is None:
        return
    earlier_folder, summary = earlier
    for patch in earlier_folder.path.glob("code.before-resume.*.diff"):  # from resumes before it
        if not (folder.path / patch.name).exists():
            write_atomically(folder.path / patch.name, patch.read_text())
    sha = summary.provenance.get("git_patch_sha256")
    if sha and sha != code.patch_sha256 and earlier_folder.code_patch.is_file() \
            and not folder.earlier_code_patch(sha).exists():
        write_atomically(folder.earlier_code_patch(sha), earlier_folder.code_patch.read_text())


def _as_float(value: Any) -> float | None:
    return None if value is None else float(value)


def settings_key(cfg: DictConfig, base_dir: Path) -> str:
    """A hash of the whole config but `ckpt_path`, resolved (an environment variable's value, not its
    name), and of where relative paths start: two runs with equal keys were asked the same."""
    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation only Hydra's running app resolves
        values = OmegaConf.to_container(cfg, resolve=False)
    values.pop("ckpt_path", None)
    values["base_dir"] = str(Path(base_dir).resolve())
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _completed_as_asked(folder: RunFolder, key: str) -> RunSummary | None:
    """This folder's run, when it completed with the settings `key` names: `ckpt_path=last` then
    has nothing to do (a resumed sweep keeps its finished runs; a later epoch limit trains on)."""
    try:
        earlier = folder.summary()
    except ValueError:  # a half-written metrics.json
        return None
    done = earlier is not None and earlier.status == "completed" and earlier.settings_key == key
    return earlier if done else None


def _config_summary(settings: RunSettings) -> dict[str, Any]:
    model = settings.model
    return {"dataset": settings.dataset.name, "cnn": settings.cnn.name, "rnn": model.cell,
            "cnn_weights": weights_source(settings.cnn).label(), "seed": settings.seed,
            "max_epochs": settings.trainer.max_epochs, **model.hyperparameters(), "compile": model.compile}
