"""A committed Flickr8k comparison (docs/<sweep>/), one run at a time.

    python benchmarks/flickr8k_comparison.py [--sweep sweeps/<name>.yaml] [--max-runs N] [--dry-run]
                                             [--adopt docs/<other>/runs] [--retrain-dirty]
                                             [--only key=value] [override ...]

Runs the cells of the sweep file (default `sweeps/flickr8k_cnn_rnn.yaml`: cnn x rnn x seed) that
have no completed result under `docs/<sweep>/runs/` yet, seed by seed (every cell's seed 0 first),
each as a one-run multirun of that sweep. When its runs are done (or it is interrupted: Ctrl+C,
SIGTERM), it keeps each completed run's small results (metrics.json, captions.json with the
per-image scores, .hydra/ with the overrides) in `docs/<sweep>/runs/<nn>-<cell>-seed<k>/` and
rewrites the report from everything kept so far. Not after each run: a kept folder is a change to
the checkout, and every later run would record its tree as dirty. The runs (15-40 min each on a
2-core CPU) can span machine sessions (`--max-runs N` a session, then commit the kept folder); a run
that completed after its driver stopped is kept the next time. Checkpoints, features and figures
stay under outputs/ and data/. A run cut off (the session ended, a kill) goes on from its last
checkpoint the next time the driver runs (`ckpt_path=last` in its own folder: it ends as the
uninterrupted run would). Before it trains, it warns when the checkout has uncommitted changes, and
with `--retrain-dirty` refuses to start. `--dry-run` lists the runs still missing, without adopting
any.

`--retrain-dirty` counts a kept run that came from a tree with uncommitted changes (its metrics.json
says `git_dirty`) as missing: it trains again from the clean checkout, and the kept folder is
replaced only when the new run has completed, so a failed or cut-off retrain loses nothing kept.
With `--adopt` as well, a source that is itself from a dirty tree is not adopted. `--only
cnn=mobilenet_v2` (repeatable) limits any of this to the cells with that value.

`--adopt` reuses another comparison's kept run for a cell whose composed config it equals (all
keys both have; `sweep_name` aside, and the trainable top's settings where neither has a top):
e.g. the CNN/RNN comparison's EfficientNet-Lite2 + GRU runs are the trainable-top sweep's N=0 arm.

Regenerate a report anywhere, without training:
    python -m captioner.report docs/flickr8k_cnn_rnn --html-images 120
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from captioner.records.run_summary import RunSummary
from captioner.runs.provenance import code_state

REPO = Path(__file__).resolve().parent.parent
SWEEPS = REPO / "sweeps"
KEPT_FILES = ("metrics.json", "captions.json", ".hydra/overrides.yaml", ".hydra/config.yaml")
KEPT_IF_THERE = ("code.diff",)  # a run from a tree with uncommitted changes: the changes
# Keys that do not change a run: its sweep's name, and the trainable top's settings without a top.
NAME_KEYS = ("sweep_name",)
TOP_KEYS = ("model.top_lr_multiplier", "model.top_dropout")


def cell_name(cell: dict[str, str]) -> str:
    """`efficientnet_lite2-gru-seed0`; a dotted key shows its last part: `trainable_blocks1-seed0`."""
    parts = [value if "." not in key else f"{key.rsplit('.', 1)[1]}{value}"
             for key, value in cell.items() if key != "seed"]
    return "-".join([*parts, f"seed{cell['seed']}"])


def swept_values(items: list[str], cells: list[dict[str, str]]) -> dict[str, str]:
    """`["cnn=mobilenet_v2"]` as {"cnn": "mobilenet_v2"}; ValueError naming what the sweep has when
    the key is not swept or the value not among its values."""
    swept = {key: sorted({cell[key] for cell in cells}) for key in cells[0]}
    chosen = {}
    for item in items:
        key, _, value = item.partition("=")
        if value not in swept.get(key, ()):
            choices = "; ".join(f"{k}={','.join(v)}" for k, v in swept.items())
            raise ValueError(f"--only {item}: not a swept value (the sweep has {choices})")
        chosen[key] = value
    return chosen


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The keys on which two runs' configs (unresolved, as Hydra saves them) would train differently.
    A key only one side has is a setting added since the older run, with its old behaviour as the
    default, so it does not count."""
    a, b = _flat(ours), _flat(theirs)
    ignored = set(NAME_KEYS)
    if not a.get("cnn.trainable_blocks") and not b.get("cnn.trainable_blocks"):
        ignored |= set(TOP_KEYS)
    return sorted(key for key in a.keys() & b.keys() if key not in ignored and a[key] != b[key])


class KeptSweep:
    """A sweep file's cells and the folder its finished runs are kept in (docs/<sweep>/runs/)."""

    def __init__(self, sweep: Path = SWEEPS / "flickr8k_cnn_rnn.yaml", kept: Path | None = None,
                 extra_overrides: list[str] | None = None):
        self.sweep = Path(sweep).resolve()
        self.extra_overrides = list(extra_overrides or [])  # every run's, e.g. dataset.root=<elsewhere>
        self.report_dir = REPO / "docs" / self.sweep.stem
        self.kept = kept or self.report_dir / "runs"
        self.outputs = REPO / "outputs" / self.sweep.stem

    def cells(self, only: dict[str, str] | None = None) -> list[dict[str, str]]:
        """The sweep's runs, seed-major: every other combination at seed 0, then seed 1, ...;
        `only`: just the cells with these values (e.g. {"cnn": "mobilenet_v2"})."""
        params = yaml.safe_load(self.sweep.read_text())["hydra"]["sweeper"]["params"]
        values = {key: str(value).split(",") for key, value in params.items()}
        seeds = values.pop("seed")
        cells = [dict(zip(values, combination, strict=True), seed=seed)
                 for seed in seeds for combination in itertools.product(*values.values())]
        return [cell for cell in cells if all(cell.get(key) == value for key, value in (only or {}).items())]

    def kept_name(self, cell: dict[str, str]) -> str:
        """Numbered in the sweep's order, which the report lists runs and levels in."""
        return f"{self.cells().index(cell):02d}-{cell_name(cell)}"

    def is_kept(self, cell: dict[str, str]) -> bool:
        return _completed(self.kept / self.kept_name(cell))

    def keep(self, run_dir: Path, cell: dict[str, str], overrides: list[str] | None = None) -> Path:
        """Copy a run's small results next to the report (into a new folder, then renamed into place).
        `overrides` replaces its overrides.yaml (an adopted run gets this sweep's cell); a resumed
        run's `ckpt_path` is dropped from it, since a resume ends as the uninterrupted run would."""
        target = self.kept / self.kept_name(cell)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        for name in KEPT_FILES:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run_dir / name, staging / name)
        for name in KEPT_IF_THERE:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, staging / name)
        kept_overrides = staging / ".hydra" / "overrides.yaml"
        if overrides is not None:
            kept_overrides.write_text(yaml.safe_dump(overrides))
            (staging / "adopted_from.txt").write_text(f"{os.path.relpath(run_dir, REPO)}\n")
        given = yaml.safe_load(kept_overrides.read_text()) or []
        if resumes := [o for o in given if o.startswith("ckpt_path=")]:
            kept_overrides.write_text(yaml.safe_dump([o for o in given if o not in resumes]))
            (staging / "resumed.txt").write_text(f"{', '.join(resumes)}: resumed after an interruption\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return target

    def missing(self, retrain_dirty: bool = False,
                only: dict[str, str] | None = None) -> list[dict[str, str]]:
        """The cells still to train: no completed kept run, or (`retrain_dirty`) one whose code had
        uncommitted changes; `only`: just the cells with these values (e.g. {"cnn": "mobilenet_v2"})."""
        return [cell for cell in self.cells(only)
                if not self.is_kept(cell) or (retrain_dirty and _dirty(self.kept / self.kept_name(cell)))]

    def newest_run(self, cell: dict[str, str], clean_only: bool = False) -> Path | None:
        """The cell's newest run under outputs/<sweep>/ (the driver's own folders), if any;
        `clean_only`: None if that run's code had uncommitted changes (not kept, not resumed)."""
        runs = sorted(self.outputs.glob(f"*_{cell_name(cell)}/0"))
        return runs[-1] if runs and not (clean_only and _dirty(runs[-1])) else None

    def overrides(self, cell: dict[str, str]) -> list[str]:
        return [f"{key}={value}" for key, value in cell.items()]

    def composed_config(self, cell: dict[str, str]) -> dict[str, Any]:
        """The cell's config as the run would save it (.hydra/config.yaml: unresolved)."""
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf

        with initialize_config_dir(config_dir=str(self.sweep.parent), version_base="1.3"):
            cfg = compose(config_name=self.sweep.stem,
                          overrides=[f"hydra.searchpath=[file://{REPO / 'conf'}]", *self.overrides(cell),
                                     *self.extra_overrides])
        return OmegaConf.to_container(cfg, resolve=False)

    def adoptable(self, cell: dict[str, str], other_kept: Path, clean_only: bool = False) -> Path | None:
        """A completed run kept under `other_kept` that trained exactly what this cell would
        (`clean_only`: and from a tree without uncommitted changes)."""
        ours = self.composed_config(cell)
        for run in sorted(Path(other_kept).iterdir()):
            config = run / ".hydra" / "config.yaml"
            if _completed(run) and config.is_file() and not (clean_only and _dirty(run)) \
                    and not config_differences(ours, yaml.safe_load(config.read_text())):
                return run
        return None

    def train(self, cell: dict[str, str], resume: Path | None = None) -> Path:
        """One cell as a one-run multirun of the sweep (its overrides.yaml then names the cell), or
        the interrupted run `resume` (a `<sweep dir>/0` with checkpoints/last.ckpt) going on."""
        if resume is None:
            started = time.strftime("%Y-%m-%d_%H-%M-%S")
            sweep_dir = self.outputs / f"{started}_{cell_name(cell)}"
        else:
            sweep_dir = resume.parent
        command = [sys.executable, "train.py", "-m", "--config-dir", str(self.sweep.parent),
                   "--config-name", self.sweep.stem, *self.overrides(cell), *self.extra_overrides,
                   f"hydra.sweep.dir={sweep_dir}",
                   *(["ckpt_path=last"] if resume is not None else [])]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, cwd=REPO, check=False)
        return sweep_dir / "0"

    def write_report(self) -> None:
        command = [sys.executable, "-m", "captioner.report", str(self.report_dir), "--html-images", "120"]
        subprocess.run(command, cwd=REPO, check=False)


def _status(run: Path) -> str | None:
    summary = RunSummary.read(run / "metrics.json")
    return summary.status if summary is not None else None


def _completed(run: Path) -> bool:
    return _status(run) == "completed"


def _dirty(run: Path) -> bool:
    """The run's code had uncommitted changes (its metrics.json says so; code.diff holds them)."""
    summary = RunSummary.read(run / "metrics.json")
    return summary is not None and summary.provenance.get("git_dirty") is True


def _resumable(run: Path | None) -> bool:
    """Cut off with a checkpoint (killed, preempted, still `running` on record); a failed run's
    error would come back on resume, so it starts afresh."""
    return run is not None and (run / "checkpoints" / "last.ckpt").is_file() and _status(run) != "failed"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", type=Path, default=SWEEPS / "flickr8k_cnn_rnn.yaml", help="the sweep file")
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many runs")
    parser.add_argument("--dry-run", action="store_true", help="list the runs still missing and stop")
    parser.add_argument("--adopt", type=Path, default=None,
                        help="another comparison's kept runs: reuse one whose config equals a missing cell's")
    parser.add_argument("--retrain-dirty", action="store_true",
                        help="retrain kept runs made with uncommitted changes (replaced once done)")
    parser.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                        help="only the cells with this value, e.g. cnn=mobilenet_v2 (repeatable)")
    parser.add_argument("overrides", nargs="*", help="for every run, e.g. dataset.root=<flickr8k elsewhere>")
    args = parser.parse_args(argv)
    sweep = KeptSweep(args.sweep, extra_overrides=args.overrides)
    try:
        only = swept_values(args.only, sweep.cells())
    except ValueError as error:
        parser.error(f"{args.sweep.name}: {error}")
    missing = sweep.missing(args.retrain_dirty, only)
    adoptions = [] if args.adopt is None or args.dry_run else [
        (cell, source) for cell in missing
        if (source := sweep.adoptable(cell, args.adopt, clean_only=args.retrain_dirty)) is not None]
    adopted = [cell for cell, _ in adoptions]
    missing = [cell for cell in missing if cell not in adopted]
    names = ", ".join(map(cell_name, missing)) or "none"
    print(f"{len(missing)} of {len(sweep.cells(only))} runs missing: {names}", flush=True)
    if (changed := uncommitted_changes()) and missing[:args.max_runs]:
        message = (f"the checkout has uncommitted changes ({', '.join(changed[:5])}"
                   f"{', ...' if len(changed) > 5 else ''}): runs trained now record them as dirty")
        if args.retrain_dirty and not args.dry_run:  # they would replace dirty runs with dirty runs
            parser.error(f"{message}; commit or stash them first")
        print(f"warning: {message}", flush=True)
    if args.dry_run:
        return
    signal.signal(signal.SIGTERM, _interrupt)  # a session's end keeps what completed, as Ctrl+C does
    kept, interrupted = train_then_keep(sweep, missing[:args.max_runs], clean_only=args.retrain_dirty)
    for cell, source in adoptions:  # after the training too: they change the checkout as well
        target = sweep.keep(source, cell, sweep.overrides(cell))
        print(f"{cell_name(cell)}: adopted as {target.name} from {os.path.relpath(source, REPO)}", flush=True)
    if kept or adoptions:
        sweep.write_report()
    if interrupted:
        sys.exit(130)

def train_then_keep(sweep: KeptSweep, cells: list[dict[str, str]],
                    clean_only: bool = False) -> tuple[list[Path], bool]:
    """Train `cells` one by one, then keep the completed ones: only at the end, or when interrupted
    (Ctrl+C; SIGTERM, which `main` turns into one), since a kept folder in docs/ is a change to the
    checkout that every later run would record as dirty. A failed run does not stop the others; it
    stays missing. Returns the kept folders and whether the training was interrupted."""
    completed, interrupted = [], False
    try:
        for cell in cells:
            newest = sweep.newest_run(cell, clean_only=clean_only)
            if newest is not None and _completed(newest):  # finished after the driver that ran it stopped
                run_dir = newest
            else:  # an interrupted run with a checkpoint goes on from it (a session's end, a kill)
                run_dir = sweep.train(cell, resume=newest if _resumable(newest) else None)
            if _completed(run_dir):
                completed.append((cell, run_dir))
            else:
                print(f"{cell_name(cell)}: not completed; see {run_dir}", flush=True)
    except KeyboardInterrupt:  # the run in progress goes on from its checkpoint next time
        interrupted = True
        print("interrupted: keeping the runs completed so far", flush=True)
    kept = [sweep.keep(run_dir, cell) for cell, run_dir in completed]
    for folder in kept:
        print(f"kept {os.path.relpath(folder, REPO)}", flush=True)
    return kept, interrupted


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")

def uncommitted_changes(checkout: Path = REPO) -> list[str]:
    """The files whose uncommitted changes a run started now would record (provenance's view)."""
    code = code_state(checkout)
    return [*code.changed_files, *code.left_out] if code.dirty else []


if __name__ == "__main__":
    main()
