"""Finding the checkpoint to resume from: `ckpt_path=<file>` or `ckpt_path=last`."""

from __future__ import annotations

from pathlib import Path

from captioner.run_folder import RunFolder
from captioner.training.checkpoint_loading import CheckpointNotFoundError

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
        return path
    if folder.last_checkpoint.is_file():
        return folder.last_checkpoint
    wanted = _comparable(overrides)
    candidates = [earlier.last_checkpoint for earlier in RunFolder.all_under(base_dir / "outputs")
                  if earlier.path.resolve() != folder.path.resolve() and earlier.last_checkpoint.is_file()
                  and _comparable(earlier.overrides()) == wanted]
    if not candidates:
        raise CheckpointNotFoundError(
            f"ckpt_path=last: neither this run's folder {folder.path} nor an earlier run under "
            f"{base_dir / 'outputs'} with overrides {wanted} has checkpoints/last.ckpt; "
            "pass ckpt_path=<path to a .ckpt file> instead")
    return max(candidates, key=lambda p: p.stat().st_mtime)
