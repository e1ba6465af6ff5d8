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
that completed after its driver stopped is kept the next time (if it trained what its cell composes
now: a trial with other settings in the driver's folder is neither kept nor resumed). Checkpoints,
features and figures stay under outputs/ and data/. A run cut off (the session ended, a kill) goes
on from its last checkpoint the next time the driver runs (`ckpt_path=last` in its own folder: it
ends as the uninterrupted run would); a resume that train.py refuses up front (a damaged
checkpoint, settings it cannot go on with: it says why and leaves the run as it was) is marked in
that folder (RESUME_REFUSED), never tried again, and the cell trains afresh at once. Before it
trains, it warns when the checkout has uncommitted changes, and with `--retrain-dirty` refuses to
start. `--dry-run` lists the runs still missing, without adopting any.

Stopping it: Ctrl+C or SIGTERM to the driver reaches the run in progress as a SIGTERM, which saves
a checkpoint at the end of its batch (up to STOP_GRACE_S; then it is killed); the completed runs are
kept, with signals held off while they are copied, the report is rewritten, and it exits 130. One
driver runs a sweep at a time (a lock in outputs/<sweep>/); a run still training in its own process
(its driver stopped, it did not) is left to it. Exit status: 0 when every run it was given completed
and the report was written, 1 otherwise (a report cut off or failed is rewritten the next time), 2
for a bad option or an unreadable file, which is named.

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from filelock import FileLock, Timeout

from captioner.records.run_summary import RunSummary
from captioner.runs.provenance import code_state

REPO = Path(__file__).resolve().parent.parent
SWEEPS = REPO / "sweeps"
KEPT_FILES = ("metrics.json", "captions.json", ".hydra/overrides.yaml", ".hydra/config.yaml")
KEPT_IF_THERE = ("code.diff", "code.before-resume.*.diff")  # a run from uncommitted changes: them
# Keys that do not change a run: its sweep's name, and the trainable top's settings without a top.
NAME_KEYS = ("sweep_name",)
TOP_KEYS = ("model.top_lr_multiplier", "model.top_dropout")
# Overrides that say where this machine keeps things, not what the run trains: not kept with a run,
# or the report would read runs made on two machines as a swept factor.
LOCATION_KEYS = ("data_root", "dataset.root")
# How long an interrupted train.py gets to save its checkpoint at the end of its batch and exit.
STOP_GRACE_S = 120.0
# In a run folder: train.py refused to resume it. An error found before training leaves the run as
# it was, and a multirun exits 1 for any run that did not complete: an untouched metrics.json after
# an exit that is not a signal's is the sign. (Hydra's own errors look the same, but a bad command
# would fail the fresh run too.)
RESUME_REFUSED = "resume-refused.txt"


def cell_name(cell: dict[str, str]) -> str:
    """`efficientnet_lite2-gru-seed0`; a dotted key shows its last part: `trainable_blocks1-seed0`."""
    parts = [value if "." not in key else f"{key.rsplit('.', 1)[1]}{value}"
             for key, value in cell.items() if key != "seed"]
    return "-".join([*parts, f"seed{cell['seed']}"])


def swept_values(items: list[str], cells: list[dict[str, str]]) -> dict[str, set[str]]:
    """`["cnn=mobilenet_v2", "seed=0", "seed=1"]` as {"cnn": {"mobilenet_v2"}, "seed": {"0", "1"}}
    (a key given twice: either value); ValueError naming what the sweep has when the key is not
    swept or the value not among its values."""
    swept = {key: sorted({cell[key] for cell in cells}) for key in cells[0]}
    chosen: dict[str, set[str]] = {}
    for item in items:
        key, _, value = item.partition("=")
        if value not in swept.get(key, ()):
            choices = "; ".join(f"{k}={','.join(v)}" for k, v in swept.items())
            raise ValueError(f"--only {item}: not a swept value (the sweep has {choices})")
        chosen.setdefault(key, set()).add(value)
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

    def cells(self, only: dict[str, set[str]] | None = None) -> list[dict[str, str]]:
        """The sweep's runs, seed-major: every other combination at seed 0, then seed 1, ...;
        `only`: just the cells with one of these values (e.g. {"cnn": {"mobilenet_v2"}})."""
        params = (_read_yaml(self.sweep) or {}).get("hydra", {}).get("sweeper", {}).get("params") or {}
        values = {key: str(value).split(",") for key, value in params.items()}
        if "seed" not in values:
            raise ValueError(f"{self.sweep}: the driver runs a sweep over seeds, and this file's "
                             "hydra.sweeper.params has no `seed` (e.g. seed: 0,1,2)")
        seeds = values.pop("seed")
        cells = [dict(zip(values, combination, strict=True), seed=seed)
                 for seed in seeds for combination in itertools.product(*values.values())]
        wanted = (only or {}).items()
        return [cell for cell in cells if all(cell.get(key) in chosen for key, chosen in wanted)]

    def kept_name(self, cell: dict[str, str]) -> str:
        """Numbered in the sweep's order, which the report lists runs and levels in."""
        return f"{self.cells().index(cell):02d}-{cell_name(cell)}"

    def is_kept(self, cell: dict[str, str]) -> bool:
        return _completed(self.kept / self.kept_name(cell))

    def keep(self, run_dir: Path, cell: dict[str, str], overrides: list[str] | None = None) -> Path:
        """Copy a run's small results next to the report (into a new folder, then renamed into place).
        `overrides` replaces its overrides.yaml (an adopted run gets this sweep's cell); a resumed
        run's `ckpt_path` is dropped from it, since a resume ends as the uninterrupted run would, and
        so are the machine's locations (LOCATION_KEYS). Call it with signals deferred (`main`)."""
        target = self.kept / self.kept_name(cell)
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        for name in KEPT_FILES:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run_dir / name, staging / name)
        for pattern in KEPT_IF_THERE:
            for found in run_dir.glob(pattern):
                shutil.copy2(found, staging / found.name)
        kept_overrides = staging / ".hydra" / "overrides.yaml"
        if overrides is not None:
            kept_overrides.write_text(yaml.safe_dump(overrides))
            (staging / "adopted_from.txt").write_text(f"{os.path.relpath(run_dir, REPO)}\n")
        given = _read_yaml(kept_overrides) or []
        resumes = [o for o in given if o.startswith("ckpt_path=")]
        located = [o for o in given if o.partition("=")[0].lstrip("+~") in LOCATION_KEYS]
        if resumes or located:
            kept_overrides.write_text(yaml.safe_dump([o for o in given if o not in resumes + located]))
        if resumes:
            (staging / "resumed.txt").write_text(f"{', '.join(resumes)}: resumed after an interruption\n")
        replaced = target.with_name(target.name + ".old")  # never a moment without a kept run there
        if target.exists():
            shutil.rmtree(replaced, ignore_errors=True)
            target.rename(replaced)
        staging.rename(target)
        shutil.rmtree(replaced, ignore_errors=True)
        return target

    def tidy(self) -> None:
        """Undo what a keep killed half-way left (`keep` is shielded from signals, not from a kill):
        a staging folder goes, a replaced run whose successor is not in place comes back."""
        if not self.kept.is_dir():
            return
        for staging in self.kept.glob("*.partial"):
            shutil.rmtree(staging, ignore_errors=True)
        for replaced in self.kept.glob("*.old"):
            target = replaced.with_name(replaced.name.removesuffix(".old"))
            if target.exists():
                shutil.rmtree(replaced, ignore_errors=True)
            else:
                replaced.rename(target)

    def report_is_stale(self) -> bool:
        """No report yet, or a kept run is newer than it (a report cut off, or one that failed)."""
        report = self.report_dir / "report.md"
        if not report.is_file():
            return self.kept.is_dir() and any(self.kept.glob("*/metrics.json"))
        written = report.stat().st_mtime
        return any(m.stat().st_mtime > written for m in self.kept.glob("*/metrics.json"))

    def missing(self, retrain_dirty: bool = False,
                only: dict[str, set[str]] | None = None) -> list[dict[str, str]]:
        """The cells still to train: no completed kept run, or (`retrain_dirty`) one whose code had
        uncommitted changes; `only`: just the cells with these values (e.g. {"cnn": {"mobilenet_v2"}})."""
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

    def trained_otherwise(self, cell: dict[str, str], run: Path) -> list[str]:
        """The settings on which `run` (say, a trial with trainer.max_epochs=1 in the driver's
        folder) trained other than the cell composes now; [] where its config is not recorded."""
        config = run / ".hydra" / "config.yaml"
        saved = _read_yaml(config) if config.is_file() else None
        return config_differences(self.composed_config(cell), saved) if isinstance(saved, dict) else []

    def adoptable(self, cell: dict[str, str], other_kept: Path, clean_only: bool = False) -> Path | None:
        """A completed run kept under `other_kept` that trained exactly what this cell would
        (`clean_only`: and from a tree without uncommitted changes)."""
        ours = self.composed_config(cell)
        for run in sorted(Path(other_kept).iterdir()):
            config = run / ".hydra" / "config.yaml"
            if run.suffix in (".partial", ".old"):  # a keep cut off there: not a run
                continue
            if _completed(run) and config.is_file() and not (clean_only and _dirty(run)) \
                    and not config_differences(ours, _read_yaml(config)):
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
        before = (resume / "metrics.json").read_bytes() if resume is not None else None
        process = subprocess.Popen(command, cwd=REPO)
        try:
            process.wait()
        except KeyboardInterrupt:  # the run saves where it is, so that the next time goes on from there
            stop_run(process)
            raise
        # A killed train.py (returncode < 0, or 128 + signal) may not have reached the run: not refused.
        untouched = resume is not None and (resume / "metrics.json").read_bytes() == before
        if untouched and 0 <= process.returncode < 128:
            (resume / RESUME_REFUSED).write_text(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: train.py refused "
                                                 "to resume this run (its error was printed where the "
                                                 "driver ran); the driver trained the cell afresh\n")
        return sweep_dir / "0"

    def write_report(self) -> bool:
        """Rewrite the report from every kept run; False if it failed (its error is on stderr)."""
        command = [sys.executable, "-m", "captioner.report", str(self.report_dir), "--html-images", "120"]
        return subprocess.run(command, cwd=REPO, check=False).returncode == 0


def stop_run(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """Ask a train.py to stop as a scheduler would (SIGTERM: it saves a checkpoint at the end of its
    batch and exits, captioner/training/preemption.py) and wait for it; killed after `grace_s`.
    A Ctrl+C has reached it already; a SIGTERM sent to the driver alone has not."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):  # or a second Ctrl+C: no more waiting
        process.kill()
        process.wait()
        print(f"train.py (process {process.pid}) killed before it saved: the next time goes on from its "
              "last checkpoint", flush=True)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None


def _status(run: Path) -> str | None:
    summary = RunSummary.read(run / "metrics.json")
    return summary.status if summary is not None else None


def _completed(run: Path) -> bool:
    return _status(run) == "completed"


def _dirty(run: Path) -> bool:
    """Some of the run's training ran code with uncommitted changes (its metrics.json says so,
    resumes included; code.diff and code.before-resume.*.diff hold them)."""
    summary = RunSummary.read(run / "metrics.json")
    return summary is not None and summary.uncommitted_changes


def _resumable(run: Path | None) -> bool:
    """Cut off with a checkpoint (killed, preempted, still `running` on record); a failed run's
    error would come back on resume, and so would a refused resume's: those start afresh."""
    return run is not None and (run / "checkpoints" / "last.ckpt").is_file() and _status(run) != "failed" \
        and not (run / RESUME_REFUSED).is_file()


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
                        help="only the cells with this value, e.g. cnn=mobilenet_v2 (repeatable; "
                             "a key given twice: either value)")
    parser.add_argument("overrides", nargs="*", help="for every run, e.g. dataset.root=<flickr8k elsewhere>")
    args = parser.parse_args(argv)
    if args.max_runs is not None and args.max_runs < 0:
        parser.error(f"--max-runs {args.max_runs}: expected 0 or more")
    sweep = KeptSweep(args.sweep, extra_overrides=args.overrides)
    try:
        cells = sweep.cells()
    except ValueError as error:
        parser.error(str(error))
    try:
        only = swept_values(args.only, cells)
    except ValueError as error:
        parser.error(f"{args.sweep.name}: {error}")
    if not args.dry_run:  # two drivers would train one cell in one folder, and keep into each other's tree
        sweep.outputs.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(sweep.outputs / ".driver.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            parser.error(f"another driver is running {args.sweep.name} ({lock.lock_file} is held)")
        sweep.tidy()
    try:
        missing = sweep.missing(args.retrain_dirty, only)
        adoptions = [] if args.adopt is None or args.dry_run else [
            (cell, source) for cell in missing
            if (source := sweep.adoptable(cell, args.adopt, clean_only=args.retrain_dirty)) is not None]
    except ValueError as error:  # a kept run's metrics.json or config that does not read: named
        parser.error(str(error))
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
    outcome = train_then_keep(sweep, missing[:args.max_runs], clean_only=args.retrain_dirty)
    with deferred_signals() as received:  # after the training too: they change the checkout as well
        for cell, source in adoptions:
            target = sweep.keep(source, cell, sweep.overrides(cell))
            print(f"{cell_name(cell)}: adopted as {target.name} from {os.path.relpath(source, REPO)}",
                  flush=True)
    interrupted = outcome.interrupted or bool(received)
    report_written = True
    if outcome.kept or adoptions or sweep.report_is_stale():
        try:
            report_written = sweep.write_report()
        except KeyboardInterrupt:
            interrupted, report_written = True, False
        if not report_written:
            where = os.path.relpath(sweep.report_dir, REPO)
            print(f"the report in {where} is not up to date with its kept runs: the next run of the driver "
                  f"rewrites it (or: python -m captioner.report {where} --html-images 120)",
                  file=sys.stderr, flush=True)
    lock.release()
    if interrupted:
        sys.exit(130)
    if outcome.not_completed or not report_written:
        sys.exit(1)


class Outcome(NamedTuple):
    kept: list[Path]  # the folders kept in docs/
    interrupted: bool  # by Ctrl+C or SIGTERM
    not_completed: list[dict[str, str]]  # cells whose run failed, was not kept, or is still running


def train_then_keep(sweep: KeptSweep, cells: list[dict[str, str]], clean_only: bool = False) -> Outcome:
    """Train `cells` one by one, then keep the completed ones: only at the end, or when interrupted
    (Ctrl+C; SIGTERM, which `main` turns into one), since a kept folder in docs/ is a change to the
    checkout that every later run would record as dirty. A failed run does not stop the others; it
    stays missing. `clean_only` (--retrain-dirty): a run whose code had uncommitted changes (the
    checkout changed while it trained) is not kept."""
    completed, not_completed, interrupted = [], [], False
    try:
        for cell in cells:
            newest = sweep.newest_run(cell, clean_only=clean_only)
            if newest is not None and (pid := _running_here(newest)) is not None:
                print(f"{cell_name(cell)}: still training in process {pid} ({newest}); left to it",
                      flush=True)
                not_completed.append(cell)
                continue
            if newest is not None and (differences := sweep.trained_otherwise(cell, newest)):
                print(f"{cell_name(cell)}: {newest} trained other settings ({', '.join(differences[:5])}): "
                      "neither kept nor resumed", flush=True)
                newest = None
            if newest is not None and _completed(newest):  # finished after the driver that ran it stopped
                run_dir = newest
            else:  # an interrupted run with a checkpoint goes on from it (a session's end, a kill)
                resume = newest if _resumable(newest) else None
                run_dir = sweep.train(cell, resume=resume)
                if resume is not None and (resume / RESUME_REFUSED).is_file():
                    print(f"{cell_name(cell)}: {resume} cannot be resumed (see above): training afresh",
                          flush=True)
                    run_dir = sweep.train(cell)
            if not _completed(run_dir):
                print(f"{cell_name(cell)}: not completed; see {run_dir}", flush=True)
                not_completed.append(cell)
            elif clean_only and _dirty(run_dir):
                print(f"{cell_name(cell)}: not kept: the checkout changed while it trained "
                      f"({run_dir / 'code.diff'})", flush=True)
                not_completed.append(cell)
            else:
                completed.append((cell, run_dir))
    except KeyboardInterrupt:  # the run in progress goes on from its checkpoint next time
        interrupted = True
        print("interrupted: keeping the runs completed so far", flush=True)
    with deferred_signals() as received:
        kept = [sweep.keep(run_dir, cell) for cell, run_dir in completed]
    for folder in kept:
        print(f"kept {os.path.relpath(folder, REPO)}", flush=True)
    return Outcome(kept, interrupted or bool(received), not_completed)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def deferred_signals() -> Iterator[list[int]]:
    """Ctrl+C and SIGTERM wait until the block is done (keeping runs takes milliseconds, and cut off
    half-way it would leave docs/ half-changed); the list says which arrived meanwhile."""
    received: list[int] = []

    def note(signum: int, frame: object) -> None:
        received.append(signum)
        print(f"received {signal.Signals(signum).name}: stopping once the runs are kept", flush=True)

    previous = {signum: signal.signal(signum, note) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _running_here(run: Path) -> int | None:
    """The process id of a run still training on this machine (its driver stopped, it did not)."""
    summary = RunSummary.read(run / "metrics.json")
    alive = summary is not None and summary.status == "running" and summary.process_alive_here
    return summary.pid if alive else None


def uncommitted_changes(checkout: Path = REPO) -> list[str]:
    """The files whose uncommitted changes a run started now would record (provenance's view)."""
    code = code_state(checkout)
    return [*code.changed_files, *code.left_out] if code.dirty else []


if __name__ == "__main__":
    main()
