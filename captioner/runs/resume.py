"""Finding the checkpoint to resume from (`ckpt_path=<file>` or `ckpt_path=last`), and checking,
before a run writes anything, that it can be read and that the run's config can go on from it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from captioner.errors import ConfigError
from captioner.run_folder import RunFolder
from captioner.training.checkpoint_loading import CheckpointError, CheckpointNotFoundError

log = logging.getLogger(__name__)

IGNORED_OVERRIDES = ("ckpt_path=",)


def _comparable(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if not o.startswith(IGNORED_OVERRIDES))


def resolve_checkpoint(ckpt_path: str | None, folder: RunFolder, overrides: list[str],
                       base_dir: Path) -> Path | None:
    """The checkpoint file to resume from, or None to start fresh.

    A file (its path already absolute) is taken as it is. `last` picks this run folder's own
    last checkpoint when there is one (a fixed `hydra.run.dir` after a kill or a preemption),
    otherwise the one of the newest earlier run under `<base_dir>/outputs` whose command-line
    overrides equal this run's (ignoring `ckpt_path`).
    """
    if not ckpt_path:
        return None
    if ckpt_path != "last":
        path = Path(ckpt_path)
        if not path.is_file():
            raise CheckpointNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file; "
                                          "pass an existing .ckpt file, or ckpt_path=last")
        if (damage := _damage(path)) is not None:
            raise CheckpointError(f"ckpt_path={ckpt_path}: the checkpoint is damaged ({damage}); "
                                  "pass another .ckpt file")
        return path
    if folder.last_checkpoint.is_file():
        return _readable_or_fallback(folder)
    wanted = _comparable(overrides)
    candidates = [earlier.last_checkpoint for earlier in RunFolder.all_under(base_dir / "outputs")
                  if earlier.path.resolve() != folder.path.resolve() and earlier.last_checkpoint.is_file()
                  and _comparable(earlier.overrides()) == wanted]
    if not candidates:
        raise CheckpointNotFoundError(
            f"ckpt_path=last: neither this run's folder {folder.path} nor an earlier run under "
            f"{base_dir / 'outputs'} with overrides {wanted} has checkpoints/last.ckpt; "
            "pass ckpt_path=<path to a .ckpt file> instead")
    newest = max(candidates, key=lambda p: p.stat().st_mtime)
    if (damage := _damage(newest)) is not None:
        raise CheckpointError(f"ckpt_path=last: {newest}, the newest earlier run's checkpoint, is damaged "
                              f"({damage}); pass ckpt_path=<another .ckpt file>")
    return newest


def _damage(path: Path) -> str | None:
    """Why `path` cannot be loaded (a cut or corrupt file), or None when it loads."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated zip, a bad CRC, unpicklable data, ...
        return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
    return None


def _readable_or_fallback(folder: RunFolder) -> Path:
    """The run's last checkpoint, or, when it is damaged (a full disk, a cut copy), its newest
    readable checkpoint, with a warning: the epochs since then are trained again."""
    last = folder.last_checkpoint
    damage = _damage(last)
    if damage is None:
        return last
    others = sorted((p for p in folder.checkpoints.glob("*.ckpt") if p != last),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for other in others:
        if _damage(other) is None:
            log.warning("%s is damaged (%s); resuming from %s, the newest readable checkpoint of this "
                        "run (the epochs after it are trained again)", last, damage, other)
            return other
    raise CheckpointError(f"{last} is damaged ({damage}) and {folder.checkpoints} holds no other readable "
                          "checkpoint; start the run again without ckpt_path, or pass ckpt_path=<file>")


# What a resumed run must share with its checkpoint: the network's shape and what its features are.
UNCHANGEABLE = {"rnn": "rnn.cell", "embed_dim": "model.embed_dim", "hidden_dim": "model.hidden_dim",
                "attention_dim": "model.attention_dim"}


def resumable_step(checkpoint: Path, cfg: DictConfig) -> int:
    """The global step `checkpoint` was saved at, once `cfg` is known to go on from it; else a
    ConfigError naming every setting that the model in `checkpoint` cannot go on with."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    saved: dict[str, Any] = state.get("hyper_parameters", {})
    record = saved.get("cnn") or {}
    wanted = {key: _select(cfg, option) for key, option in UNCHANGEABLE.items()}
    pairs = [(option, saved.get(key), wanted[key]) for key, option in UNCHANGEABLE.items()]
    pairs += [("dataset", record.get("dataset"), cfg.dataset.name), ("cnn", record.get("cnn"), cfg.cnn.name)]
    changed = [f"{option}={new} (the checkpoint has {old})" for option, old, new in pairs
               if old is not None and old != new]
    if changed:
        raise ConfigError(f"{checkpoint} cannot be resumed with {', '.join(changed)}: these settings "
                          "cannot change when resuming; drop them, or start a new run without ckpt_path")
    return int(state.get("global_step", 0))


def _select(cfg: DictConfig, option: str) -> Any:
    node: Any = cfg
    for part in option.split("."):
        node = node.get(part)
    return node
