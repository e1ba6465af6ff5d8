"""Finding the checkpoint to resume from (`ckpt_path=<file>` or `ckpt_path=last`), and checking,
before a run writes anything, that it can be read and that the run's settings can go on from it.
Each candidate file is read once (its CheckpointRecord); Lightning's fit loads the weights."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from captioner.data.vocabulary import Vocabulary
from captioner.errors import ConfigError
from captioner.launch.ddp_under_hydra import resume_of_started_rank
from captioner.records.run_folder import RunFolder
from captioner.settings import RunSettings
from captioner.training.checkpoint_loading import CheckpointError, CheckpointNotFoundError
from captioner.training.checkpoint_record import (
    CheckpointDamagedError,
    CheckpointRecord,
    read_checkpoint_record,
)

log = logging.getLogger(__name__)

IGNORED_OVERRIDES = ("ckpt_path=",)


def _comparable(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if not o.startswith(IGNORED_OVERRIDES))


def _age_order(path: Path) -> tuple[int, list[int | str]]:
    """Oldest first. Some file systems keep whole seconds: within one, the path decides, numbers as
    numbers (run folders are named by their start time, best checkpoints by their epoch: 100 > 99)."""
    return path.stat().st_mtime_ns, [int(part) if part.isdigit() else part
                                     for part in re.split(r"(\d+)", str(path))]


def requeued_ckpt_path(ckpt_path: str | None, folder: RunFolder) -> str | None:
    """`ckpt_path`, or `last` for a job SLURM started again (`SLURM_RESTART_COUNT` > 0: requeued
    after a preemption, or by `scontrol requeue`) in its own run folder, which holds a checkpoint:
    the same command, rerun by the scheduler, goes on where the run stopped instead of training it
    again from the start (or from the checkpoint it started from). A run of a `hydra/launcher=slurm`
    sweep lands in its own folder again; one started by a user's own sbatch script needs a fixed
    `hydra.sweep.dir` or `hydra.run.dir`."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "")
    # also over a ckpt_path=<file> the run started from: its own last.ckpt went on from that file
    if ckpt_path != "last" and restarts.isdigit() and int(restarts) > 0 and folder.last_checkpoint.is_file():
        log.warning("SLURM started this job again (restart %s): going on from %s as ckpt_path=last would",
                    restarts, folder.last_checkpoint)
        return "last"
    return ckpt_path


def resolve_checkpoint(ckpt_path: str | None, folder: RunFolder, overrides: list[str],
                       base_dir: Path, in_sweep: bool = False,
                       config_name: str | None = None) -> CheckpointRecord | None:
    """The checkpoint to resume from, read, or None to start fresh.

    A file (its path already absolute) is taken as it is. `last` picks this run folder's own
    last checkpoint when there is one (a fixed `hydra.run.dir` after a kill or a preemption),
    otherwise the one of the newest earlier run under `<base_dir>/outputs` whose command-line
    overrides equal this run's (ignoring `ckpt_path`), composed from the same primary config
    (`config_name`, when given: `--config-name=experiment_x` with the same overrides is another
    experiment). A run of a sweep goes on only from its own
    folder, else starts fresh: a preempted sweep goes on with the same command and
    `hydra.sweep.dir`, its runs that never began included.
    """
    if not ckpt_path:
        return None
    if ckpt_path != "last":
        path = Path(ckpt_path)
        if not path.is_file():
            raise CheckpointNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file; "
                                          "pass an existing .ckpt file, or ckpt_path=last")
        try:
            return read_checkpoint_record(path)
        except CheckpointDamagedError as damage:
            raise CheckpointError(f"ckpt_path={ckpt_path}: the checkpoint is damaged ({damage}); "
                                  "pass another .ckpt file") from None
    if folder.last_checkpoint.is_file():
        return _readable_or_fallback(folder)
    if in_sweep:  # not another sweep's run with the same overrides (other defaults, maybe finished)
        log.info("ckpt_path=last: %s has no checkpoint yet; this run of the sweep starts fresh", folder.path)
        return None
    wanted = _comparable(overrides)
    candidates = [earlier.last_checkpoint for earlier in RunFolder.all_under(base_dir / "outputs")
                  if earlier.path.resolve() != folder.path.resolve() and earlier.last_checkpoint.is_file()
                  and _comparable(earlier.overrides()) == wanted
                  and (config_name is None or earlier.config_name() == config_name)]
    if not candidates:
        of_config = f" of config {config_name!r}" if config_name else ""
        raise CheckpointNotFoundError(
            f"ckpt_path=last: neither this run's folder {folder.path} nor an earlier run{of_config} under "
            f"{base_dir / 'outputs'} with overrides {wanted} has checkpoints/last.ckpt; "
            "pass ckpt_path=<path to a .ckpt file> instead")
    newest = max(candidates, key=_age_order)
    try:
        return read_checkpoint_record(newest)
    except CheckpointDamagedError as damage:
        raise CheckpointError(f"ckpt_path=last: {newest}, the newest earlier run's checkpoint, is damaged "
                              f"({damage}); pass ckpt_path=<another .ckpt file>") from None


def resolve_checkpoint_of_rank(ckpt_path: str | None, folder: RunFolder, overrides: list[str],
                               base_dir: Path, in_sweep: bool = False,
                               config_name: str | None = None) -> CheckpointRecord | None:
    """`resolve_checkpoint`, except in a DDP rank that rank 0 started: there, rank 0's decision
    (launch/ddp_under_hydra.py), since the rank runs the job as a single run, not as the sweep's."""
    handed_down = resume_of_started_rank()
    if handed_down is not None:
        return resolve_checkpoint(handed_down or None, folder, [], base_dir)
    return resolve_checkpoint(ckpt_path, folder, overrides, base_dir, in_sweep, config_name)


def _readable_or_fallback(folder: RunFolder) -> CheckpointRecord:
    """The run's last checkpoint, or, when it is damaged (a full disk, a cut copy), its newest
    readable checkpoint, with a warning: the epochs since then are trained again."""
    last = folder.last_checkpoint
    try:
        return read_checkpoint_record(last)
    except CheckpointDamagedError as error:
        damage = error
    others = sorted((p for p in folder.checkpoints.glob("*.ckpt") if p != last),
                    key=_age_order, reverse=True)
    for other in others:
        try:
            record = read_checkpoint_record(other)
        except CheckpointDamagedError:
            continue
        log.warning("%s is damaged (%s); resuming from %s, the newest readable checkpoint of this "
                    "run (the epochs after it are trained again)", last, damage, other)
        return record
    raise CheckpointError(f"{last} is damaged ({damage}) and {folder.checkpoints} holds no other readable "
                          "checkpoint; start the run again without ckpt_path, or pass ckpt_path=<file>")


def check_resumable(checkpoint: CheckpointRecord, settings: RunSettings) -> None:
    """A ConfigError naming every setting that the model in `checkpoint` cannot go on with: the
    network's shape and what its features are."""
    saved, model = checkpoint.hyper_parameters, settings.model
    pairs = [("rnn.cell", saved.get("rnn"), model.cell),
             ("model.embed_dim", saved.get("embed_dim"), model.embed_dim),
             ("model.hidden_dim", saved.get("hidden_dim"), model.hidden_dim),
             ("model.attention_dim", saved.get("attention_dim"), model.attention_dim),
             ("dataset", checkpoint.cnn.get("dataset"), settings.dataset.name),
             ("cnn", checkpoint.cnn.get("cnn"), settings.cnn.name)]
    changed = [f"{option}={new} (the checkpoint has {old})" for option, old, new in pairs
               if old is not None and old != new]
    if changed:
        raise ConfigError(f"{checkpoint.path} cannot be resumed with {', '.join(changed)}: these settings "
                          "cannot change when resuming; drop them, or start a new run without ckpt_path")


def check_vocabulary(checkpoint: CheckpointRecord, vocabulary: Vocabulary) -> None:
    """A ConfigError when the train captions now give another vocabulary than the checkpoint's
    model was trained with (its output ids would mean other words)."""
    saved = checkpoint.hyper_parameters.get("vocabulary")
    if saved is not None and (difference := vocabulary.difference(saved)):
        raise ConfigError(f"{checkpoint.path} was trained with another vocabulary than this run's train "
                          f"captions give ({difference}): the train split, its captions, "
                          "text.max_words or text.min_word_count changed since; resume with those it "
                          "trained with, or start a new run without ckpt_path")
