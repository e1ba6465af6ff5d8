"""`python -m captioner.report <sweep dir>`: compare a sweep's runs in one table, with charts.

Reads what each run left in its directory (`.hydra/overrides.yaml`, `metrics.json`,
`captions.json`), so it works offline, on a sweep that is still running, and on runs that failed
or were killed. Writes `report.md`, `effects_<factor>.png` (grouped bars per swept factor) and
`val_cider.png` (validation CIDEr-D per epoch, one line per run) into the sweep directory.
The report gives each factor's effect with 95% intervals (`effects.py`), the scores by content
group (`content_groups.py`) and the prior study's claims beside the answers (`prior_study_claims.py`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from captioner.compare.content_groups import DEFAULT_GROUPS, ContentGroup, group_scores, load_groups
from captioner.compare.effects import REPLICATE, Effect, factor_effects
from captioner.compare.html_report import write_html_report
from captioner.compare.prior_study_claims import judge_claims
from captioner.compare.report_sections import (
    effect_lines,
    group_lines,
    markdown_table,
    number,
    seed_spread_lines,
)
from captioner.errors import exit_for_user_error
from captioner.paths import write_atomically
from captioner.records.sweep_runs import RunResult, collect_runs
from captioner.scoring.coco_metrics import SCORE_NAMES

EFFECT_METRICS = ("cider", "bleu4")  # the scores whose differences get intervals
HEADERS = {"bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4",
           "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr-D"}


def swept_factors(runs: list[RunResult]) -> list[str]:
    """Overrides whose value differs between runs, in the order they were given."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys]
    return [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]


def main_effects(runs: list[RunResult], factor: str) -> dict[str, dict[str, float]]:
    """For each level of `factor`: the mean of every score over the completed runs at that level."""
    levels: dict[str, list[RunResult]] = {}
    for run in runs:  # every level is listed, also one whose runs all failed (runs: 0)
        members = levels.setdefault(run.overrides.get(factor, "-"), [])
        if run.status == "completed":
            members.append(run)
    return {
        level: {"runs": float(len(members)),
                **{name: sum(r.test[name] for r in members) / len(members)
                   for name in SCORE_NAMES if members and all(name in r.test for r in members)}}
        for level, members in levels.items()
    }


def _row(run: RunResult, factors: list[str]) -> list[str]:
    status = run.status if not run.error else f"{run.status}: {run.error}"
    return [run.path.name, run.label(factors), status.replace("|", "/").replace("\n", " ")[:120],
            *(number(run.test.get(name)) for name in SCORE_NAMES),
            "-" if run.epochs is None else str(run.epochs), number(run.train_time_s, 0),
            number(run.seconds_per_epoch, 0), number(run.captions_per_s, 0)]


def write_report(sweep_dir: Path, runs: list[RunResult], groups: list[ContentGroup] | None = None,
                 resamples: int = 1000, html_images: int | None = None,
                 browser: dict[str, Any] | None = None) -> Path:
    """report.md, the charts, and report.html with its image browser (`html_images`: at most this
    many test images, those where the runs disagree most; None: all; `browser`: its data, when the
    caller built it already for another use); returns report.md's path."""
    sweep_dir = Path(sweep_dir)
    factors = swept_factors(runs)
    shared = {k: v for k, v in runs[0].overrides.items() if k not in factors}
    failed = [r for r in runs if r.status != "completed"]
    lines = [f"# Sweep {sweep_dir.parent.name}/{sweep_dir.name}", "",
             f"{len(runs)} runs, {len(runs) - len(failed)} completed, {len(failed)} not completed.",
             f"Swept: {', '.join(factors) or 'nothing'}. "
             f"Shared overrides: {' '.join(f'{k}={v}' for k, v in shared.items()) or 'none'}.", "",
             "## Test scores", ""]
    headers = ["run", "overrides", "status", *(HEADERS[n] for n in SCORE_NAMES), "epochs", "train s",
               "s/epoch", "captions/s"]
    lines += markdown_table(headers, [_row(run, factors) for run in runs])
    lines += ["", "s/epoch: training time per epoch, with its validation; captions/s: test decoding."]
    if factors:
        lines += ["", "## Main effects", "",
                  "Mean test score of the completed runs at each level of each swept factor.", ""]
    effects_of: dict[str, list[Effect]] = {}
    for factor in [f for f in factors if f != REPLICATE]:
        effects_of[factor] = factor_effects(runs, factors, factor, EFFECT_METRICS, resamples=resamples)
        effects = main_effects(runs, factor)
        lines += [f"### {factor}", ""]
        lines += markdown_table([factor, "runs", *(HEADERS[n] for n in SCORE_NAMES)], [
            [level, str(int(scores["runs"])), *(number(scores.get(n)) for n in SCORE_NAMES)]
            for level, scores in effects.items()])
        lines += ["", *effect_lines(effects_of[factor], factor)]
        chart = _plot_effects(effects, factor, sweep_dir / f"effects_{_file_part(factor)}.png")
        lines += ["", f"![{factor}]({chart.name})", ""]
    if REPLICATE in factors:
        lines += seed_spread_lines(runs, factors)
    groups = load_groups() if groups is None else groups
    by_group = group_scores(runs, groups)
    lines += group_lines(runs, factors, by_group)
    lines += ["## The prior study's claims", "",
              "Each claim of the prior study beside what this sweep measured.", ""]
    lines += markdown_table(["claim", "answer", "evidence"], [
        [v.claim, f"**{v.answer}**", v.evidence.replace("|", "/")]
        for v in judge_claims(runs, factors, effects_of, by_group)])
    lines.append("")
    curves = _plot_val_cider(runs, factors, sweep_dir / "val_cider.png")
    if curves:
        lines += ["## Validation CIDEr-D per epoch", "", f"![val CIDEr-D]({curves.name})", ""]
    report = sweep_dir / "report.md"
    write_atomically(report, "\n".join(lines) + "\n")
    write_html_report(sweep_dir, "\n".join(lines), runs, factors, groups, html_images, browser)
    return report


def _file_part(factor: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in factor)


def _plot_effects(effects: dict[str, dict[str, float]], factor: str, path: Path) -> Path:
    """Grouped bars, one group per score and one bar per level; CIDEr-D (0-10) gets its own axis."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    small_axis, cider_axis = figure.subplots(1, 2, width_ratios=[6, 1.4])
    small = [n for n in SCORE_NAMES if n != "cider"]
    width = 0.8 / max(len(effects), 1)
    for i, (level, scores) in enumerate(effects.items()):
        offsets = [j + (i - (len(effects) - 1) / 2) * width for j in range(len(small))]
        small_axis.bar(offsets, [scores.get(n, 0.0) for n in small], width, label=level)
        cider_axis.bar([(i - (len(effects) - 1) / 2) * width], [scores.get("cider", 0.0)], width)
    small_axis.set_xticks(range(len(small)), [HEADERS[n] for n in small])
    small_axis.set_ylabel("mean test score")
    small_axis.legend(title=factor, fontsize="small")
    cider_axis.set_xticks([0], [HEADERS["cider"]])
    figure.suptitle(f"main effect of {factor}")
    figure.savefig(path, dpi=100)
    return path


def _plot_val_cider(runs: list[RunResult], factors: list[str], path: Path) -> Path | None:
    curves = [(run, [(e["epoch"], e["cider"]) for e in run.history if "cider" in e]) for run in runs]
    curves = [(run, points) for run, points in curves if points]
    if not curves:
        return None
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axis = figure.subplots()
    for run, points in curves:
        line, = axis.plot(*zip(*points, strict=True), marker="o", label=run.label(factors))
        scst = [(e["epoch"], e["cider"]) for e in run.history if "cider" in e and e.get("stage") == "scst"]
        if scst:  # the self-critical stage's epochs: filled squares on the same line
            axis.plot(*zip(*scst, strict=True), "s", color=line.get_color(), markersize=8)
    if any(e.get("stage") == "scst" for run, _ in curves for e in run.history):
        axis.set_title("squares: self-critical (SCST) epochs")
    axis.set_xlabel("epoch")
    axis.set_ylabel("val CIDEr-D")
    axis.legend(fontsize="small")
    figure.savefig(path, dpi=100)
    return path


def print_report(runs: list[RunResult], console: Console | None = None) -> None:
    """The report's table, narrow enough for a terminal: one column per swept factor."""
    factors = swept_factors(runs)
    console = console or Console()
    if not console.is_terminal:  # a log file: no need to squeeze the table into 80 columns
        console.width = max(console.width, 160)
    table = Table(title="sweep: test scores (report.md has the errors and main effects)")
    for header in ["run", *factors, "status", *(HEADERS[n] for n in SCORE_NAMES), "epochs", "train s"]:
        table.add_column(header, justify="left" if header in ("run", "status", *factors) else "right")
    for run in runs:
        row = _row(run, factors)
        status = run.status if not run.error else f"{run.status}: {run.error}"[:60]
        table.add_row(row[0], *(run.overrides.get(f, "-") for f in factors), status, *row[3:],
                      style=None if run.status == "completed" else "red")
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m captioner.report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder, e.g. outputs/multirun/<date>_<time>")
    parser.add_argument("--groups", type=Path, default=DEFAULT_GROUPS,
                        help=f"content groups, YAML `group: [word, ...]` (default: {DEFAULT_GROUPS})")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the test images")
    parser.add_argument("--html-images", type=int, default=None,
                        help="report.html's browser: at most this many test images, those where the runs "
                             "disagree most (default: all)")
    args = parser.parse_args(argv)
    try:
        runs = collect_runs(args.sweep_dir)
        groups = load_groups(args.groups)
    except (FileNotFoundError, ValueError) as error:
        exit_for_user_error(error, parser.prog)
    report = write_report(args.sweep_dir, runs, groups, args.resamples, args.html_images)
    print_report(runs)
    print(f"wrote {report} and {report.with_suffix('.html')}")


if __name__ == "__main__":
    main()
