"""A sweep's runs as the report reads them: each run folder's overrides, summary and captions.

Reads what each run left in its directory (`.hydra/overrides.yaml`, `metrics.json`,
`captions.json`), so it works offline, on a sweep that is still running, and on runs that failed
or were killed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from captioner.records.caption_entry import per_image_scores, read_caption_entries
from captioner.records.per_image_scores import RunScores
from captioner.records.run_folder import RunFolder
from captioner.records.run_summary import RunSummary

log = logging.getLogger(__name__)

def sweep_group(sweep_name: str, sweep_dir: Path | str) -> str:
    """The W&B group of a sweep's runs: `<sweep_name>-<the sweep folder's name>`."""
    return f"{sweep_name}-{Path(sweep_dir).name}"


@dataclass
class RunResult:
    """One run of a sweep, as found on disk."""

    path: Path
    overrides: dict[str, str]
    # completed | failed | preempted | running | killed (said running, its process is gone) |
    # missing (no metrics.json: killed before it wrote one, or never started) | refused (the
    # sweep's last command could not run it as asked and left the earlier run as it was)
    status: str
    error: str | None = None
    test: dict[str, float] = field(default_factory=dict)
    epochs: int | None = None
    train_time_s: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    captions_per_s: float | None = None  # test decoding
    per_image: RunScores | None = None  # from captions.json (runs from before it had scores: None)
    captions: dict[str, str] = field(default_factory=dict)  # test image id -> caption
    references: dict[str, list[str]] = field(default_factory=dict)
    image_files: dict[str, str] = field(default_factory=dict)  # test image id -> photo (newer runs)
    attention_files: dict[str, str] = field(default_factory=dict)  # -> figure, relative to the run
    commit: str | None = None  # the git commit it trained from (runs from before provenance: None)
    uncommitted_changes: bool = False  # and changes on top of it (code.diff, where kept)
    overrides_read: bool = True  # False: its overrides.yaml could not be read (`overrides` is {})
    name: str = ""  # how the report names it: the folder's name, or its path below the sweep
    # folder where names repeat (several sweeps in one folder); "": the folder's name

    @property
    def seconds_per_epoch(self) -> float | None:
        """Training time per epoch (with its dev validation)."""
        return self.train_time_s / self.epochs if self.train_time_s and self.epochs else None

    def __post_init__(self) -> None:
        self.name = self.name or self.path.name

    def label(self, factors: list[str]) -> str:
        return " ".join(f"{f}={self.overrides.get(f, '-')}" for f in factors) or self.name


def _parse_overrides(lines: list[str]) -> dict[str, str]:
    parsed = {}
    for line in lines:
        key, _, value = line.partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def _run_order(relative: Path) -> tuple[tuple[int, int, str], ...]:
    """The path below the sweep folder, part by part, job numbers as numbers: `A/2` before `A/10`
    before `B/0`. The whole path, so that runs of several sweeps in one folder never tie (a tie
    kept the file system's order)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in relative.parts)


def _names(relatives: list[Path]) -> list[str]:
    """Each run's name in the report: its folder's name, or where two runs share a folder name
    (several sweeps in one folder: `A/0` and `B/0`, not `0` twice) every run's path below the
    sweep folder."""
    names = [relative.name for relative in relatives]
    return names if len(set(names)) == len(names) else [relative.as_posix() for relative in relatives]


def collect_runs(sweep_dir: Path) -> list[RunResult]:
    """Every run under `sweep_dir` (a folder where Hydra recorded its overrides), in job order."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such sweep directory")
    folders = sorted(RunFolder.all_under(sweep_dir), key=lambda f: _run_order(f.path.relative_to(sweep_dir)))
    names = _names([folder.path.relative_to(sweep_dir) for folder in folders])
    runs = []
    for folder, name in zip(folders, names, strict=True):
        runs.append(_run_of(folder))
        runs[-1].name = name or runs[-1].path.name  # "": the sweep folder is a run's own
    if not runs:
        raise FileNotFoundError(f"{sweep_dir}: no runs found (no */.hydra/overrides.yaml below it)")
    return runs


def _run_of(folder: RunFolder) -> RunResult:
    try:
        overrides = _parse_overrides(folder.overrides())
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError) as error:
        return RunResult(folder.path, {}, "missing", error=f"{folder.overrides_file}: {error}",
                         overrides_read=False)
    try:
        return _read_run(folder, overrides)
    except (TypeError, ValueError, AttributeError, KeyError) as error:  # a metrics.json of another shape
        what = f"not a run's summary ({type(error).__name__}: {error})"
        return RunResult(folder.path, overrides, "missing", error=f"{folder.metrics}: {what}")


def _read_run(folder: RunFolder, overrides: dict[str, str]) -> RunResult:
    try:
        summary = RunSummary.read(folder.metrics)
    except ValueError as error:  # half a JSON file: the run is still writing it, or was killed
        return RunResult(folder.path, overrides, "missing", error=str(error))
    if summary is None:
        return RunResult(folder.path, overrides, "missing")
    status, error = _status(summary)
    if (refusal := folder.refused()) is not None:
        status, error = "refused", f"{refusal} (the run before it is kept as it was)"
    run = RunResult(
        folder.path, overrides, status, error=error,
        test={k: float(v) for k, v in summary.test.items()}, epochs=_number(summary.epochs, int),
        train_time_s=_number(summary.train_time_s),
        history=[e for e in summary.history if isinstance(e, dict) and isinstance(e.get("epoch"), int)],
        captions_per_s=_number(summary.test_captions_per_s),
        commit=summary.provenance.get("git_commit"),
        uncommitted_changes=summary.uncommitted_changes)
    if status == "completed":
        _read_captions(folder, run)
    return run


def _number(value: Any, kind: type | tuple[type, ...] = (int, float)) -> Any:
    """`value` where it is a number of that kind (not a bool), else None: a damaged summary's."""
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _read_captions(folder: RunFolder, run: RunResult) -> None:
    """The run's test captions and per-image scores, where it wrote them."""
    try:
        entries = read_caption_entries(folder.captions)
    except FileNotFoundError:  # a run that did not finish, or an older one: the report does without
        return
    except (OSError, ValueError, TypeError) as error:  # damaged: its captions and scores left out
        log.warning("%s: left out of the report's per-image comparisons: %s", folder.captions, error)
        return
    run.captions = {e.image_id: e.caption for e in entries}
    run.references = {e.image_id: e.references for e in entries}
    run.image_files = {e.image_id: e.image for e in entries if e.image}
    run.attention_files = {e.image_id: e.attention for e in entries if e.attention}
    run.per_image = per_image_scores(entries)


def _status(summary: RunSummary) -> tuple[str, str | None]:
    """The run's status and error; `running` is checked against its process on this host."""
    if summary.status == "running" and summary.process_alive_here is False:
        return "killed", (f"process {summary.pid} ended without a word (kill -9?); resume it with "
                          "ckpt_path=last")
    return summary.status, summary.error
