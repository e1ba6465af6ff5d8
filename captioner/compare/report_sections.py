"""The markdown of report.md's sections: the rule, comparisons with verdicts, seed spreads, content
groups against humans, colours and speed."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from captioner.compare.combined_interval import Estimate
from captioner.compare.content_groups import ContentGroup, human_share_naming
from captioner.compare.decision_rule import Verdict, percent
from captioner.compare.effects import RATIO, REPLICATE
from captioner.compare.sweep_verdicts import COLOURS, Judged, SweepVerdicts
from captioner.records.sweep_runs import RunResult

METRIC_NAMES = {"cider": "CIDEr-D", "bleu4": "BLEU-4", RATIO: "model/human CIDEr-D",
                "ratio": "model/human CIDEr-D", "share": "share", "speed": "relative time"}


def number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(row) + " |" for row in rows)]


def interval_text(estimate: Estimate | None, confidence: float, digits: int = 3) -> str:
    """"+0.041 [+0.017, +0.062]": the estimate and its interval (seeds and images together)."""
    if estimate is None:
        return "-"
    low, high = estimate.interval(confidence)
    return f"{estimate.value:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def _verdict_cells(verdict: Verdict | None) -> list[str]:
    if verdict is None:
        return ["-", "-"]
    adjusted = "-" if verdict.adjusted_p is None else f"{verdict.adjusted_p:.3f}"
    return [f"**{verdict.word}**", adjusted]


def comparison_lines(judged: Sequence[Judged], first_column: str, confidence: float) -> list[str]:
    """One row per comparison: the deciding score with its interval (at the rule's `confidence`),
    the measure it is on (each row its own: within one test set raw CIDEr-D, across test sets
    model/human ratios) and its verdict, the score beside."""
    if not judged:
        return []
    beside = next((j.beside.metric for j in judged if j.beside is not None), None)
    shown = f"{percent(confidence)} interval"
    headers = [first_column, "within", f"estimate, {shown}", "verdict", "p (Holm)", "measure",
               *([f"{METRIC_NAMES.get(beside, beside)}, {shown} (shown)"] if beside else []), "seeds"]
    rows = []
    for item in judged:
        comparison = item.comparison
        row = [comparison.label, comparison.within or "all", interval_text(comparison.estimate, confidence),
               *(["not testable", "-"] if comparison.untestable else _verdict_cells(item.verdict)),
               METRIC_NAMES.get(comparison.metric, comparison.metric)]
        if beside:
            row.append(interval_text(item.beside.estimate if item.beside else None, confidence))
        row.append(str(comparison.estimate.seeds) if comparison.estimate else "0")
        rows.append(row)
    lines = markdown_table(headers, rows)
    if any(j.comparison.metric == RATIO for j in judged):
        lines += ["", "model/human CIDEr-D: these runs were scored on different test sets, whose scores are "
                  "not comparable as differences (other references, other document frequencies). Each run's "
                  "leave-one-out CIDEr-D is divided by its own test set's human baseline, and the ratios are "
                  "compared, each test set resampled on its own."]
    for reason in dict.fromkeys(j.comparison.untestable for j in judged if j.comparison.untestable):
        lines += ["", f"not testable: {reason}."]
    return [*lines, ""]


def rule_lines(verdicts: SweepVerdicts) -> list[str]:
    total, tested = verdicts.counts()
    return ["## How the verdicts are made", "", verdicts.rule.describe(), "",
            f"This report reads **{total} verdicts** at once; {tested} of them compare settings with "
            f"{verdicts.rule.seeds_required}+ seeds a side and are tested (Holm's correction over those "
            f"{tested}); the rest read \"inconclusive (n seeds)\". The p column gives each tested verdict's "
            "p-value after the correction: better/worse from the test of 0, equivalent from TOST.", ""]


def _with_baseline(verdicts: SweepVerdicts) -> tuple[Any, RunResult] | None:
    """A human baseline the report's tables show, and a compared run on its test set."""
    for baseline in verdicts.baselines.values():
        for cell in verdicts.cells.by_cell.values():
            for run in cell.values():
                if run.path in baseline.models:
                    return baseline, run
    return None


def group_lines(verdicts: SweepVerdicts, groups: Sequence[ContentGroup], factors: Sequence[str]) -> list[str]:
    """Per content group: the human baseline, and each setting's model/human CIDEr-D and naming rate."""
    missing = [f"not testable: {reason}." for reason in dict.fromkeys(verdicts.without_baseline.values())]
    found = _with_baseline(verdicts)
    if found is None:
        if not missing:
            return []
        return ["## Content groups against humans", "",
                "Content groups and colours are measured against a human baseline (each of an image's "
                "references scored against the others), which needs test images with two references or "
                "more. Their comparisons are " + " ".join(missing), ""]
    baseline, shown_run = found
    cells = verdicts.cells
    confidence = verdicts.rule.confidence
    lines = ["## Content groups against humans", "",
             "Test images grouped by what most of their references mention (word lists: "
             "`conf/content_groups.yaml`). Every score here is leave-one-out: each of an image's references "
             "is scored against the others (the human), and so is the model's caption against the same "
             "others. *model/human*: the model's CIDEr-D over the humans' on the group's images, with its "
             f"{percent(confidence)} interval (seeds and images); 1 would be as close to the references as "
             "a person. *names*: how often the model's caption uses one of the group's words / how often "
             "a held-out reference does.", ""]
    if len(verdicts.baselines) > 1 or missing:  # a swept dataset: each run is measured against its own humans
        lines += [f"The human columns are those of the test set of run {shown_run.name}; each run's "
                  "model/human uses its own.", ""]
    if missing:
        lines += [f"Runs on a test set without a human baseline show \"-\": {' '.join(missing)}", ""]
    references = shown_run.references
    settings = list(cells.by_cell)
    headers = ["group", "images", "human CIDEr-D", *(setting_label(cells.factors, cell) for cell in settings)]
    rows = []
    for group in [g for g in groups if g.name != COLOURS]:
        members = [i for i, image in enumerate(baseline.image_ids) if group.shown_in(references[image])]
        if not members:
            continue
        human = float(baseline.human.cider[members].mean())
        human_names = human_share_naming(baseline, references, group)
        row = [group.name, str(len(members)), f"{human:.3f} (names {human_names:.2f})"]
        for cell in settings:
            ratio = cells.combine([(1.0, cell)], verdicts.measures.ratio(group))
            named = cells.combine([(1.0, cell)], verdicts.measures.named(group))
            row.append(f"{_plain(ratio, confidence)} (names {named.value:.2f})" if ratio and named else "-")
        rows.append(row)
    lines += markdown_table(headers, rows)
    if verdicts.groups:
        lines += ["", "One group's model/human CIDEr-D minus another's: positive when the model comes closer "
                  "to people's own captions on the first group.", ""]
        lines += comparison_lines(verdicts.groups, "groups", confidence)
    if verdicts.colours:
        lines += colour_lines(verdicts, settings, shown_run)
    return lines


def colour_lines(verdicts: SweepVerdicts, settings: list, run: RunResult) -> list[str]:
    """Colour precision and recall of humans (on `run`'s test set) and of each setting."""
    cells = verdicts.cells
    colours = verdicts.colour_group
    confidence = verdicts.rule.confidence
    lines = ["### Colours", "", "*precision*: of the colour words a caption uses, the share that a "
             "reference (of the others, for a held-out human) uses too. *recall*: of the images whose "
             "references mostly name a colour, the share whose caption names a right one. Humans: each "
             "reference held out in turn.", ""]
    human_precision = verdicts.measures.colour_precision(human=True)(run)
    human_recall = verdicts.measures.colour_recall(colours, human=True)(run)
    rows = [["humans (held out)", f"{human_precision[0]:.3f}", f"{human_recall[0]:.3f}"]]
    for cell in settings:
        precision = cells.combine([(1.0, cell)], verdicts.measures.colour_precision())
        recall = cells.combine([(1.0, cell)], verdicts.measures.colour_recall(colours))
        rows.append([setting_label(cells.factors, cell), _plain(precision, confidence),
                     _plain(recall, confidence)])
    shown = f"{percent(confidence)} interval"
    lines += markdown_table(["who", f"precision, {shown}", f"recall, {shown}"], rows)
    lines += ["", *comparison_lines(verdicts.colours, "colours", confidence)]
    return lines


def setting_label(factors: Sequence[str], cell: Sequence[str]) -> str:
    return " ".join(f"{f}={v}" for f, v in zip(factors, cell, strict=True)) or "runs"


def _plain(estimate: Estimate | None, confidence: float) -> str:
    if estimate is None:
        return "-"
    low, high = estimate.interval(confidence)
    return f"{estimate.value:.3f} [{low:.3f}, {high:.3f}]"


def speed_lines(verdicts: SweepVerdicts) -> list[str]:
    if verdicts.speed is None:
        if not verdicts.speed_untestable:  # no timing record: the claim says so
            return []
        return ["## Speed", "", f"The speed comparison is not testable: {verdicts.speed_untestable}. "
                "s/epoch in the runs table is shown as measured, not judged.", ""]
    record = verdicts.speed_record
    rows = [[arm, str(len(times)), ", ".join(f"{t:.2f}" for t in times)]
            for arm, times in record.seconds.items()]
    return ["## Speed", "", f"Interleaved timings (`{record.command}`; {record.machine}; order "
            f"{' '.join(record.order)}): seconds per timed block of training steps. s/epoch in the runs "
            "table is shown as measured, not judged.", "",
            *markdown_table(["rnn", "timings", "seconds"], rows), "",
            *comparison_lines([verdicts.speed], "speed", verdicts.rule.confidence), ""]


def seed_spread_lines(runs: Sequence[RunResult], factors: Sequence[str]) -> list[str]:
    """Each setting's test CIDEr-D and BLEU-4 across its seeds: mean and standard deviation."""
    others = [f for f in factors if f != REPLICATE]
    settings: dict[str, list[Any]] = {}
    for run in runs:
        if run.status == "completed" and "cider" in run.test:
            settings.setdefault(" ".join(f"{f}={run.overrides.get(f, '-')}" for f in others), []).append(run)
    rows = []
    for setting, members in settings.items():
        row = [setting or "-", str(len(members))]
        for metric in ("cider", "bleu4"):
            values = [r.test[metric] for r in members if metric in r.test]
            spread = statistics.stdev(values) if len(values) > 1 else None
            row.append(f"{statistics.mean(values):.3f} ± {number(spread)}" if values else "-")
        rows.append(row)
    return ["## Spread across seeds", "", "Mean ± standard deviation of the test score over the seeds "
            "of each setting: training's randomness, on the same test images.", "",
            *markdown_table(["setting", "seeds", "CIDEr-D", "BLEU-4"], rows), ""]


def code_lines(runs: Sequence[RunResult]) -> list[str]:
    """Which code trained the runs: settings compared across commits, or from trees with
    uncommitted changes, compare code too, so the report says so."""
    recorded = [run for run in runs if run.commit]
    if not recorded:
        return []
    commits = Counter(run.commit[:7] for run in recorded)
    text = "Code: " + ", ".join(f"{n} run{'s' if n > 1 else ''} from {c}" for c, n in commits.items())
    if unrecorded := len(runs) - len(recorded):
        text += f", {unrecorded} without a record"
    changed = [run.name for run in recorded if run.uncommitted_changes]
    if changed:
        text += (f". With uncommitted changes on top (their `code.diff`, where kept, holds them): "
                 f"{', '.join(changed)}")
    return [text + ".", ""]
