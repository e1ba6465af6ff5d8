"""`python -m captioner.report <sweep dir>`: compare a sweep's runs in one table, with charts.

Reads what each run left in its directory (`.hydra/overrides.yaml`, `metrics.json`,
`captions.json`), so it works offline, on a sweep that is still running, and on runs that failed
or were killed. Writes `report.md`, `effects_<factor>.png` (grouped bars per swept factor) and
`val_cider.png` (validation CIDEr-D per epoch, one line per run) into the sweep directory.
The report gives each factor's effect and interaction with intervals (the rule's 1 - alpha) over
seeds and test images (`effects.py`), content groups and colours against the human baseline
(`content_groups.py`), speed from interleaved timings (`speed.py`), every verdict by one declared
rule with Holm's correction (`decision_rule.py`, `conf/claims.yaml`), and the prior study's claims
answered by those verdicts (`prior_study_claims.py`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from captioner.compare.content_groups import DEFAULT_GROUPS, ContentGroup, load_groups
from captioner.compare.decision_rule import DEFAULT_CLAIMS, DecisionRule, load_rule, percent
from captioner.compare.effects import REPLICATE
from captioner.compare.html_report import browser_data, prune_thumbnails, write_html_report
from captioner.compare.prior_study_claims import judge_claims
from captioner.compare.report_sections import (
    code_lines,
    comparison_lines,
    group_lines,
    markdown_table,
    number,
    rule_lines,
    seed_spread_lines,
    speed_lines,
)
from captioner.compare.sweep_verdicts import SweepVerdicts
from captioner.errors import exit_for_user_error
from captioner.paths import written_as_a_set
from captioner.records.sweep_runs import RunResult, collect_runs
from captioner.scoring.coco_metrics import SCORE_NAMES

EFFECT_METRICS = ("cider", "bleu4")  # the scores whose differences get intervals
HEADERS = {"bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4",
           "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr-D"}


def swept_factors(runs: list[RunResult]) -> list[str]:
    """Overrides whose value differs between runs, in the order they were given. A run whose
    overrides could not be read is left out: its {} made every shared override look swept."""
    known = [run for run in runs if run.overrides_read]
    keys: list[str] = []
    for run in known:
        keys += [k for k in run.overrides if k not in keys]
    return [k for k in keys if len({run.overrides.get(k) for run in known}) > 1]


def main_effects(runs: list[RunResult], factor: str) -> dict[str, dict[str, float]]:
    """For each level of `factor`: the mean of every score over the completed runs at that level."""
    levels: dict[str, list[RunResult]] = {}
    # every level is listed, also one whose runs all failed (runs: 0); not a damaged run's "-"
    for run in (r for r in runs if r.overrides_read):
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
    return [run.name, run.label(factors), status.replace("|", "/").replace("\n", " ")[:120],
            *(number(run.test.get(name)) for name in SCORE_NAMES),
            "-" if run.epochs is None else str(run.epochs), number(run.train_time_s, 0),
            number(run.seconds_per_epoch, 0), number(run.captions_per_s, 0)]


def write_report(sweep_dir: Path, runs: list[RunResult], groups: list[ContentGroup] | None = None,
                 resamples: int = 1000, html_images: int | None = None,
                 browser: dict[str, Any] | None = None, rule: DecisionRule | None = None) -> Path:
    """report.md, the charts, and report.html with its image browser (`html_images`: at most this
    many test images, those where the runs disagree most; None: all; `browser`: its data, when the
    caller built it already for another use); returns report.md's path. Every verdict follows
    `rule` (default `conf/claims.yaml`)."""
    sweep_dir = Path(sweep_dir)
    factors = swept_factors(runs)
    groups = load_groups() if groups is None else groups
    rule = load_rule() if rule is None else rule
    verdicts = SweepVerdicts(runs, factors, rule, groups, resamples, sweep_dir)
    if browser is None:
        browser = browser_data(runs, factors, groups, sweep_dir, html_images)
    # A report cut off (a full disk, a kill) leaves the last whole one: markdown, page and charts.
    with written_as_a_set(sweep_dir, last="report.md") as staging:
        lines = _report_lines(sweep_dir, runs, factors, verdicts, groups, staging)
        (staging / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        write_html_report(sweep_dir, "\n".join(lines), browser, staging)
    prune_thumbnails(sweep_dir, browser)  # now that no page shows the others
    return sweep_dir / "report.md"


def _report_lines(sweep_dir: Path, runs: list[RunResult], factors: list[str], verdicts: SweepVerdicts,
                  groups: list[ContentGroup], charts: Path) -> list[str]:
    """report.md's lines; its charts are drawn into `charts`."""
    first = next((r for r in runs if r.overrides_read), runs[0])
    shared = {k: v for k, v in first.overrides.items() if k not in factors}
    failed = [r for r in runs if r.status != "completed"]
    lines = [f"# Sweep {sweep_dir.parent.name}/{sweep_dir.name}", "",
             f"{len(runs)} runs, {len(runs) - len(failed)} completed, {len(failed)} not completed.",
             f"Swept: {', '.join(factors) or 'nothing'}. "
             f"Shared overrides: {' '.join(f'{k}={v}' for k, v in shared.items()) or 'none'}.", "",
             "## Test scores", ""]
    headers = ["run", "overrides", "status", *(HEADERS[n] for n in SCORE_NAMES), "epochs", "train s",
               "s/epoch", "captions/s"]
    lines += markdown_table(headers, [_row(run, factors) for run in runs])
    lines += ["", "s/epoch: training time per epoch, with its validation, as each run measured it on "
              "whatever else the machine did then: shown, not judged (speed claims need interleaved "
              "timings); captions/s: test decoding.", ""]
    lines += code_lines(runs)
    lines += rule_lines(verdicts)
    if verdicts.cells.factors:
        lines += ["## Effects", "",
                  "Each factor's effect: level - first level, averaged over the other factors' settings, "
                  "then within each of them (a sign that flips between settings shows there). The level "
                  "table gives the mean test score of the completed runs at each level; the chart, CIDEr-D "
                  f"and BLEU-4 with {percent(verdicts.rule.confidence)} intervals.", ""]
    for factor in verdicts.cells.factors:
        effects = main_effects(runs, factor)
        lines += [f"### {factor}", ""]
        lines += markdown_table([factor, "runs", *(HEADERS[n] for n in SCORE_NAMES)], [
            [level, str(int(scores["runs"])), *(number(scores.get(n)) for n in SCORE_NAMES)]
            for level, scores in effects.items()])
        lines += ["", *comparison_lines(verdicts.effects[factor], factor, verdicts.rule.confidence)]
        chart = _plot_effects(verdicts, factor, charts / f"effects_{_file_part(factor)}.png")
        lines += [f"![{factor}]({chart.name})", ""]
    if verdicts.interactions:
        lines += ["### Interactions", "", "How much one factor's effect changes with another's level: "
                  "(effect at the second level) - (effect at the first).", "",
                  *comparison_lines(verdicts.interactions, "interaction", verdicts.rule.confidence)]
    if REPLICATE in factors:
        lines += seed_spread_lines(runs, factors)
    lines += group_lines(verdicts, groups, factors)
    lines += speed_lines(verdicts)
    lines += ["## The prior study's claims", "",
              "Each claim of the prior study, answered by the verdicts above (the rule's words; "
              "\"inconclusive\" when they do not decide it).", ""]
    lines += markdown_table(["claim", "answer", "evidence"], [
        [v.claim, f"**{v.answer}**", v.evidence.replace("|", "/")]
        for v in judge_claims(runs, factors, verdicts)])
    lines.append("")
    forest = _plot_verdicts(verdicts, charts / "verdicts.png")
    if forest:
        lines += ["## Every judged comparison", "",
                  f"Estimates with {percent(verdicts.rule.confidence)} (thin) and "
                  f"{percent(verdicts.rule.equivalence_confidence)} (thick) intervals; "
                  "the shaded band is the equivalence margin.", "", f"![verdicts]({forest.name})", ""]
    curves = _plot_val_cider(runs, factors, charts / "val_cider.png")
    if curves:
        lines += ["## Validation CIDEr-D per epoch", "", f"![val CIDEr-D]({curves.name})", ""]
    return lines


def _file_part(factor: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in factor)


def _plot_effects(verdicts: SweepVerdicts, factor: str, path: Path) -> Path:
    effects_figure(verdicts, factor).savefig(path, dpi=100)
    return path


def effects_figure(verdicts: SweepVerdicts, factor: str) -> Figure:
    """Each level's mean CIDEr-D and BLEU-4 with error bars at the rule's confidence (seeds and
    images together)."""
    confidence = verdicts.rule.confidence
    figure = Figure(figsize=(8, 3.6), layout="constrained")
    axes = figure.subplots(1, len(EFFECT_METRICS))
    for axis, metric in zip(axes, EFFECT_METRICS, strict=True):
        means = verdicts.cells.level_means(factor, metric)
        levels = [level for level, found in means.items() if found is not None]
        values = [means[level].value for level in levels]
        errors = [[means[level].value - means[level].interval(confidence)[0] for level in levels],
                  [means[level].interval(confidence)[1] - means[level].value for level in levels]]
        axis.bar(range(len(levels)), values, yerr=errors, capsize=6, color="#7aa6c2")
        axis.set_xticks(range(len(levels)), levels, fontsize="small")
        axis.set_title(f"{HEADERS[metric]} ({percent(confidence)} interval)")
        if values:
            low = min(v - e for v, e in zip(values, errors[0], strict=True))
            high = max(v + e for v, e in zip(values, errors[1], strict=True))
            axis.set_ylim(max(0.0, low - (high - low)), high + 0.2 * (high - low) + 1e-9)
    figure.suptitle(f"test score by {factor}")
    return figure


def _plot_verdicts(verdicts: SweepVerdicts, path: Path) -> Path | None:
    """A forest plot of every judged comparison, grouped by its measure (each has its own margin)."""
    judged = [j for j in verdicts.all_judged() if j.verdict is not None]
    if not judged:
        return None
    measures = list(dict.fromkeys(j.verdict.measure for j in judged))
    heights = [sum(j.verdict.measure == m for j in judged) for m in measures]
    figure = Figure(figsize=(9, 1.2 + 0.38 * len(judged) + 0.5 * len(measures)), layout="constrained")
    axes = figure.subplots(len(measures), 1, height_ratios=heights, squeeze=False)[:, 0]
    for axis, measure in zip(axes, measures, strict=True):
        items = [j for j in judged if j.verdict.measure == measure][::-1]
        margin = verdicts.rule.margin(measure)
        axis.axvspan(-margin, margin, color="#e6e6e6")
        axis.axvline(0, color="#999", linewidth=0.8)
        for row, item in enumerate(items):
            estimate = item.verdict.estimate
            low, high = estimate.interval(verdicts.rule.confidence)
            inner_low, inner_high = estimate.interval(verdicts.rule.equivalence_confidence)
            colour = {"better": "#2a7a2a", "worse": "#b03030", "equivalent": "#3060b0"}.get(
                item.verdict.word, "#777")
            axis.plot([low, high], [row, row], color=colour, linewidth=1)
            axis.plot([inner_low, inner_high], [row, row], color=colour, linewidth=4)
            axis.plot([estimate.value], [row], "o", color="black", markersize=3)
        axis.set_yticks(range(len(items)), [f"{i.verdict.label}: {i.verdict.word}" for i in items],
                        fontsize="x-small")
        axis.set_xlabel(f"{measure} (margin +-{margin:g})", fontsize="small")
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
    for header in ["run", *factors, "status", *(HEADERS[n] for n in SCORE_NAMES), "epochs", "train s",
                   "s/epoch", "captions/s"]:  # as report.md's table
        table.add_column(header, justify="left" if header in ("run", "status", *factors) else "right")
    for run in runs:
        row = _row(run, factors)
        status = run.status if not run.error else f"{run.status}: {run.error}"[:60]
        table.add_row(row[0], *(run.overrides.get(f, "-") for f in factors), status, *row[3:],
                      style=None if run.status == "completed" else "red")
    console.print(table)


MIN_RESAMPLES = 100


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m captioner.report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder, e.g. outputs/multirun/<date>_<time>")
    parser.add_argument("--groups", type=Path, default=DEFAULT_GROUPS,
                        help=f"content groups, YAML `group: [word, ...]` (default: {DEFAULT_GROUPS})")
    parser.add_argument("--claims", type=Path, default=DEFAULT_CLAIMS,
                        help=f"the decision rule every verdict follows (default: {DEFAULT_CLAIMS})")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the test images")
    parser.add_argument("--html-images", type=int, default=None,
                        help="report.html's browser: at most this many test images, those where the runs "
                             "disagree most (default: all)")
    args = parser.parse_args(argv)
    # Fewer resamples give intervals too coarse to judge by (0: zero-width, every difference "real").
    if args.resamples < MIN_RESAMPLES:
        parser.error(f"--resamples must be at least {MIN_RESAMPLES}, got {args.resamples}")
    if args.html_images is not None and args.html_images < 1:
        parser.error(f"--html-images must be at least 1 (or left out: all images), got {args.html_images}")
    try:
        runs = collect_runs(args.sweep_dir)
        groups = load_groups(args.groups)
        rule = load_rule(args.claims)
    except (FileNotFoundError, ValueError) as error:
        exit_for_user_error(error, parser.prog)
    try:
        report = write_report(args.sweep_dir, runs, groups, args.resamples, args.html_images, rule=rule)
    except OSError as error:  # an unwritable folder, a full disk
        exit_for_user_error(OSError(f"{error.filename or args.sweep_dir}: the report cannot be written "
                                    f"({error.strerror or error})"), parser.prog)
    print_report(runs)
    print(f"wrote {report} and {report.with_suffix('.html')}")


if __name__ == "__main__":
    main()
