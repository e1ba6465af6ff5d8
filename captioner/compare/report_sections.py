"""The markdown of report.md's sections: tables of effects, seed spreads and content groups."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from captioner.compare.bootstrap import Interval
from captioner.compare.content_groups import GroupScore
from captioner.compare.effects import REPLICATE, Effect
from captioner.records.sweep_runs import RunResult

METRIC_NAMES = {"cider": "CIDEr-D", "bleu4": "BLEU-4"}
UNCERTAINTY = ("Intervals are 95%. *Images*: a paired bootstrap over the test images (1,000 "
               "resamples, the same images for both sides): how far the difference could move on "
               "another test sample, for these trained models; it does not cover training's "
               "randomness. *Seeds* (only when `seed` is swept): a t-interval over the per-seed "
               "differences, which covers training's randomness too. *significant*: the interval "
               "leaves out 0.")


def number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(row) + " |" for row in rows)]


def _interval(interval: Interval | None) -> str:
    if interval is None:
        return "-"
    verdict = "significant" if interval.significant else "not significant"
    kind = "" if interval.paired else ", unpaired"
    return f"[{interval.low:+.3f}, {interval.high:+.3f}] {verdict}{kind}"


def effect_lines(effects: Sequence[Effect], factor: str) -> list[str]:
    """Each level against the first: the difference, its interval over images and over seeds."""
    if not effects:
        return []
    lines = [f"Difference from {factor}={effects[0].reference}, matched runs "
             "(equal in every other swept setting). " + UNCERTAINTY, ""]
    rows = []
    for effect in effects:
        estimate = effect.images.estimate if effect.images else None
        pairs = f"{effect.pairs}" + (f" ({effect.unmatched} runs unmatched)" if effect.unmatched else "")
        rows.append([f"{effect.level} - {effect.reference}", METRIC_NAMES[effect.metric],
                     "-" if estimate is None else f"{estimate:+.3f}", _interval(effect.images),
                     _interval(effect.seeds), pairs])
    lines += markdown_table([factor, "score", "difference", "95% interval, images", "95% interval, seeds",
                             "pairs"], rows)
    if any(e.images is not None and not e.images.paired for e in effects):
        lines += ["", "Unpaired: these runs were scored on different test images, so their images "
                  "cannot be paired; each run's images were resampled on their own."]
    if any(e.images is None for e in effects):
        lines += ["", "-: no matched pair of completed runs with per-image scores (captions.json)."]
    return [*lines, ""]


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


def group_lines(runs: Sequence[RunResult], factors: Sequence[str],
                by_group: dict[str, dict[Path, GroupScore]]) -> list[str]:
    """Per content group and run: CIDEr-D on the group's images, and how often the caption names it."""
    shown = [r for r in runs if any(r.path in scores for scores in by_group.values())]
    if not shown:
        return []
    lines = ["## Scores by content", "",
             "Test images grouped by what most of their references mention (word lists: "
             "`conf/content_groups.yaml`). Each cell: CIDEr-D on the group's images / recall, the "
             "share of them whose caption names the group.", ""]
    headers = ["group", "images", *(r.label(factors) or r.path.name for r in shown)]
    rows = []
    for name, scores in by_group.items():
        images = next((s.images for s in scores.values()), 0)
        rows.append([name, str(images), *(
            f"{number(scores[r.path].cider)} / {scores[r.path].recall:.2f}" if r.path in scores else "-"
            for r in shown)])
    return [*lines, *markdown_table(headers, rows), ""]
