"""Every verdict a sweep's report reads, computed at once so one correction covers them all.

- each swept factor's effect, on average and within each cell of the other factors;
- each interaction of two factors;
- content groups against the human baseline: one group's model/human CIDEr-D against another's;
- colours: the model's colour precision against the humans' (recall beside it);
- speed, from an interleaved timing record (`speed.json`) when the sweep folder holds one.

A verdict is judged on the rule's deciding score (CIDEr-D) or on its own measure (ratio, share,
speed); the scores shown beside it (BLEU-4) get intervals but no verdict. Holm's correction then
runs over all of them (`decision_rule.corrected`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from captioner.compare.bootstrap import ImageResampler
from captioner.compare.content_groups import ContentGroup, GroupMeasures, human_baselines
from captioner.compare.decision_rule import DecisionRule, Verdict, corrected, judge
from captioner.compare.effects import RATIO, Comparison, SweepCells
from captioner.compare.speed import relative_time
from captioner.records.speed_record import SPEED_FILE, SpeedRecord
from captioner.records.sweep_runs import RunResult

COLOURS = "colours"  # the content group whose words are colours
BY = "cnn"  # content and colour verdicts are given per CNN, the factor the prior study's claims name


@dataclass(frozen=True)
class Judged:
    comparison: Comparison
    verdict: Verdict | None  # None: no estimate (no seed with every cell completed)
    beside: Comparison | None = None  # the same comparison on the score shown beside


class SweepVerdicts:
    def __init__(self, runs: Sequence[RunResult], factors: Sequence[str], rule: DecisionRule,
                 groups: Sequence[ContentGroup], resamples: int = 1000, sweep_dir: Path | None = None):
        self.rule = rule
        colours = next((g for g in groups if g.name == COLOURS), None)
        self.content_groups, self.colour_group = list(groups), colours
        # test sets without a baseline (one reference an image): what needs one is "not testable"
        self.baselines, self.without_baseline = human_baselines(runs, colours)
        self.cells = SweepCells(runs, factors, ImageResampler(resamples), self.baselines,
                                unbiased=rule.interval == "unbiased", without_baseline=self.without_baseline)
        self.measures = GroupMeasures(self.cells)
        self.effects = {f: self._effects(f) for f in self.cells.factors}
        self.interactions = self._paired_with_beside(self.cells.interactions(rule.decides),
                                                     self._beside(self.cells.interactions))
        self.groups = self._group_contrasts([g for g in groups if g.name != COLOURS])
        self.colours = self._colour_contrasts(colours) if colours is not None else []
        self.speed_path = None if sweep_dir is None else Path(sweep_dir) / SPEED_FILE
        self.speed_record, self.speed_untestable = _speed_record(self.speed_path)
        self.speed = self._speed() if self.speed_record is not None else None
        self._correct()

    # --- the comparisons ---

    def _beside(self, compute) -> list[Comparison]:
        return [c for metric in self.rule.shown_beside for c in compute(metric)]

    def _paired_with_beside(self, decided: list[Comparison], beside: list[Comparison]) -> list[Judged]:
        shown = {(c.kind, c.factor, c.label, c.within): c for c in beside}
        return [Judged(c, self._judge(c), shown.get((c.kind, c.factor, c.label, c.within))) for c in decided]

    def _judge(self, comparison: Comparison) -> Verdict | None:
        if comparison.estimate is None:
            return None
        measure = "ratio" if comparison.metric == RATIO else comparison.metric
        where = f" ({comparison.within})" if comparison.within else ""
        label = f"{comparison.factor}: {comparison.label}{where}"
        return judge(label, comparison.estimate, measure, self.rule)

    def _effects(self, factor: str) -> list[Judged]:
        return self._paired_with_beside(self.cells.effects(factor, self.rule.decides),
                                        self._beside(lambda m: self.cells.effects(factor, m)))

    def _by_level(self) -> list[tuple[str, list]]:
        """(label, cells): each CNN's cells, or all cells when the CNN is not swept."""
        if BY in self.cells.factors:
            return [(f"{BY}={level}", self.cells.cells_with(**{BY: level}))
                    for level in self.cells.levels[BY]]
        return [("all runs", list(self.cells.by_cell))]

    def _group_contrasts(self, groups: Sequence[ContentGroup]) -> list[Judged]:
        found = []
        for first, second in itertools.combinations(groups, 2):
            for within, cells in self._by_level():
                if not cells:
                    continue

                def difference(run, a=first, b=second):
                    x, y = self.measures.ratio(a)(run), self.measures.ratio(b)(run)
                    return None if x is None or y is None else x - y
                terms = [(1 / len(cells), cell) for cell in cells]
                comparison = self.cells.against_humans("group", "content", f"{first.name} - {second.name}",
                                                       within, "ratio", terms, difference)
                found.append(Judged(comparison, self._judge(comparison)))
        return found

    def _colour_contrasts(self, colours: ContentGroup) -> list[Judged]:
        found = []
        for within, cells in self._by_level():
            if not cells:
                continue
            terms = [(1 / len(cells), cell) for cell in cells]
            precision_gap = self.measures.colour_precision(versus_human=True)
            recall_gap = self.measures.colour_recall(colours, versus_human=True)
            precision = self.cells.against_humans("colour", "colours", "precision, model - human", within,
                                                  "share", terms, precision_gap)
            recall = self.cells.against_humans("colour", "colours", "recall, model - human", within, "share",
                                               terms, recall_gap)
            verdict = None if precision.estimate is None else \
                judge(f"colours: {precision.label} ({within})", precision.estimate, "share", self.rule)
            found.append(Judged(precision, verdict, recall))
        return found

    def _speed(self) -> Judged | None:
        try:
            relative = relative_time(self.speed_record, "lstm", "gru")
        except (KeyError, ValueError) as error:  # another pair of arms, or too few timings
            what = f"no arm {error}" if isinstance(error, KeyError) else str(error)
            self.speed_untestable = f"{self.speed_path}: {what}"
            return None
        label = "LSTM time / GRU time - 1 (better: GRU faster)"
        comparison = Comparison("speed", "rnn", label, "", "speed", relative)
        return Judged(comparison, judge(f"speed: {label}", relative, "speed", self.rule))

    # --- the correction over all of them ---

    def all_judged(self) -> list[Judged]:
        return [*(j for judged in self.effects.values() for j in judged), *self.interactions, *self.groups,
                *self.colours, *([self.speed] if self.speed else [])]

    def _correct(self) -> None:
        judged = self.all_judged()
        verdicts = [j.verdict for j in judged if j.verdict is not None]
        fixed = iter(corrected(verdicts, self.rule))
        updated = {id(j): replace(j, verdict=next(fixed)) for j in judged if j.verdict is not None}

        def swap(items: list[Judged]) -> list[Judged]:
            return [updated.get(id(j), j) for j in items]
        self.effects = {f: swap(items) for f, items in self.effects.items()}
        self.interactions = swap(self.interactions)
        self.groups = swap(self.groups)
        self.colours = swap(self.colours)
        if self.speed is not None:
            self.speed = updated.get(id(self.speed), self.speed)

    def counts(self) -> tuple[int, int]:
        """(verdicts in the report, of them tested: enough seeds a side)."""
        verdicts = [j.verdict for j in self.all_judged() if j.verdict is not None]
        return len(verdicts), sum(v.tested for v in verdicts)


def _speed_record(path: Path | None) -> tuple[SpeedRecord | None, str]:
    """The sweep folder's interleaved timings (`path`: its speed.json), if it holds them; and, where
    the file cannot be read, why (the file named): then the speed comparison is not testable, the
    rest of the report stands."""
    if path is None or not path.is_file():
        return None, ""
    try:
        return SpeedRecord.read(path), ""
    except ValueError as error:  # damaged or cut off; the message names the file
        return None, str(error)
