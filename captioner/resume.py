"""Finding the checkpoint to resume from: `ckpt_path=<file>` or `ckpt_path=last`."""

from __future__ import annotations

from pathlib import Path

import yaml

from captioner.checkpoint_io import CheckpointNotFoundError
from captioner.paths import absolute

IGNORED_OVERRIDES = ("ckpt_path=",)


def _comparable(overrides: list[str]) -> list[str]:
    return sorted(o for o in overrides if not o.startswith(IGNORED_OVERRIDES))


def resolve_checkpoint(ckpt_path: str | None, run_dir: Path, overrides: list[str],
                       base_dir: Path) -> Path | None:
    """The checkpoint file to resume from, or None to start fresh.

    `last` picks this run folder's own `checkpoints/last.ckpt` when there is one (a fixed
    `hydra.run.dir` after a kill or a preemption), otherwise the one of the newest earlier run
    under `<base_dir>/outputs` whose command-line overrides equal this run's (ignoring `ckpt_path`).
    """
    if not ckpt_path:
        return None
    if ckpt_path != "last":
        path = absolute(ckpt_path, base_dir)
        if not path.is_file():
            raise CheckpointNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file ({path}); "
                                          "pass an existing .ckpt file, or ckpt_path=last")
        return path
    own = Path(run_dir) / "checkpoints" / "last.ckpt"
    if own.is_file():
        return own
    wanted = _comparable(overrides)
    candidates = []
    for last in (base_dir / "outputs").glob("**/checkpoints/last.ckpt"):
        earlier_run = last.parent.parent
        if earlier_run.resolve() == Path(run_dir).resolve():
            continue
        recorded = earlier_run / ".hydra" / "overrides.yaml"
        if recorded.is_file() and _comparable(yaml.safe_load(recorded.read_text()) or []) == wanted:
            candidates.append(last)
    if not candidates:
        raise CheckpointNotFoundError(
            f"ckpt_path=last: neither this run's folder {run_dir} nor an earlier run under "
            f"{base_dir / 'outputs'} with overrides {wanted} has checkpoints/last.ckpt; "
            "pass ckpt_path=<path to a .ckpt file> instead")
    return max(candidates, key=lambda p: p.stat().st_mtime)
