"""A sweep's comparisons, each with an interval over seeds and test images together.

The runs form cells (one value of every swept factor but `seed`), each trained once per seed. A
comparison is a weighted sum of cells, evaluated seed by seed on the seeds every cell shares:

- a factor's effect: level - reference, averaged over the other factors' cells where both exist;
- the same effect within each cell of the other factors (so a sign flip is seen, not averaged away);
- the interaction of two factors: how much one's effect changes with the other's level;
- a level's mean, for the charts' error bars.

Each is an `Estimate` (`combined_interval.py`): the per-seed values and the bootstrap variance over
the test images. Scores on different test sets (a swept dataset) are not comparable as differences:
their document frequencies and their references differ. There the comparison is made on the model's
CIDEr-D divided by the human baseline of its own test set (`human_baseline.py`), with each test set
resampled on its own.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from captioner.compare.bootstrap import ImageResampler
from captioner.compare.combined_interval import Estimate, estimate
from captioner.compare.human_baseline import Agreement, LeaveOneOut
from captioner.records.sweep_runs import RunResult

log = logging.getLogger(__name__)

REPLICATE = "seed"  # a swept seed repeats settings; it is not a factor with an effect of its own
RATIO = "cider_vs_human"  # CIDEr-D / the human baseline, where test sets differ

Cell = tuple[str, ...]
# A run's value on every image resample: (1 + resamples,), row 0 on the test set as it is; None
# where the run cannot give it.
RunStatistic = Callable[[RunResult], np.ndarray | None]


@dataclass(frozen=True)
class Comparison:
    kind: str  # effect | within | interaction | level
    factor: str  # "cnn", or "cnn x rnn" for an interaction
    label: str  # what is compared, e.g. "efficientnet_lite2 - mobilenet_v2"
    within: str  # for `within`: the other factors' values, e.g. "rnn=gru"
    metric: str  # cider | bleu4 | RATIO
    estimate: Estimate | None  # None: no seed with every cell completed, or `untestable`
    untestable: str = ""  # why it cannot be estimated at all (a test set without a human baseline)


def factor_levels(runs: Sequence[RunResult], factor: str) -> list[str]:
    """The factor's values in the order the sweep gave them."""
    levels: list[str] = []
    for run in runs:
        if (value := run.overrides.get(factor, "-")) not in levels:
            levels.append(value)
    return levels


class SweepCells:
    """The completed runs with per-image scores, by cell and seed, and their statistics."""

    def __init__(self, runs: Sequence[RunResult], factors: Sequence[str], resampler: ImageResampler,
                 baselines: dict[tuple[str, ...], LeaveOneOut] | None = None, unbiased: bool = False,
                 without_baseline: dict[tuple[str, ...], str] | None = None):
        self.factors = [f for f in factors if f != REPLICATE]
        self.unbiased = unbiased  # the rule's `interval: unbiased` (combined_interval.py)
        self.resampler = resampler
        self.baselines = baselines or {}  # test set (sorted image ids) -> humans and runs
        self.without_baseline = without_baseline or {}  # test set -> why it has no human baseline
        self.by_cell: dict[Cell, dict[str, RunResult]] = {}
        compared = []
        for run in runs:
            if run.status == "completed" and run.per_image is not None:
                cell = tuple(run.overrides.get(f, "-") for f in self.factors)
                seed = run.overrides.get(REPLICATE, "-")
                if (first := self.by_cell.setdefault(cell, {}).get(seed)) is not None:
                    log.warning("%s and %s ran the same settings with the same seed (%s): only the first "
                                "is compared", first.path, run.path, " ".join(
                                    f"{k}={v}" for k, v in run.overrides.items()) or "no overrides")
                    continue
                self.by_cell[cell][seed] = run
                compared.append(run)
        # Levels from the compared runs only: a level whose runs all failed (or a damaged run's "-")
        # has no cells, and as the reference it left every effect without an estimate.
        self.levels = {f: factor_levels(compared, f) for f in self.factors}
        self._cache: dict[tuple[str, str], np.ndarray | None] = {}

    # --- per-run statistics ---

    def statistic(self, metric: str) -> RunStatistic:
        def score(run: RunResult) -> np.ndarray | None:
            key = (str(run.path), metric)
            if key not in self._cache:
                self._cache[key] = self._score(run, metric)
            return self._cache[key]
        return score

    def _score(self, run: RunResult, metric: str) -> np.ndarray | None:
        if metric != RATIO:
            return run.per_image.score(metric, self.resampler.weights(run.per_image.image_ids))
        found = self.baseline_of(run)
        if found is None:
            return None
        baseline, model = found
        weights = self.resampler.weights(baseline.image_ids)
        return (weights @ model.cider) / (weights @ baseline.human.cider)

    def against_humans(self, kind: str, factor: str, label: str, within: str, metric: str,
                       terms: Sequence[tuple[float, Cell]], statistic: RunStatistic) -> Comparison:
        """A comparison measured against the human baselines of its cells' test sets: not testable,
        with the reason, where one of them has none."""
        reasons = dict.fromkeys(self.without_baseline[run.per_image.test_set] for _, cell in terms
                                if cell in self.by_cell for run in self.by_cell[cell].values()
                                if run.per_image.test_set in self.without_baseline)
        reason = "; ".join(reasons)
        return Comparison(kind, factor, label, within, metric,
                          None if reason else self.combine(terms, statistic), reason)

    def baseline_of(self, run: RunResult) -> tuple[LeaveOneOut, Agreement] | None:
        """The run's test set's human baseline and the run's own leave-one-out values."""
        baseline = self.baselines.get(run.per_image.test_set)
        if baseline is None or run.path not in baseline.models:
            return None
        return baseline, baseline.models[run.path]

    # --- comparisons ---

    def cells_with(self, **fixed: str) -> list[Cell]:
        return [cell for cell in self.by_cell
                if all(cell[self.factors.index(f)] == v for f, v in fixed.items())]

    def combine(self, terms: Sequence[tuple[float, Cell]], statistic: RunStatistic) -> Estimate | None:
        """sum(weight * cell's value), seed by seed over the seeds all cells share."""
        if not terms or any(cell not in self.by_cell for _, cell in terms):
            return None
        seeds = sorted(set.intersection(*(set(self.by_cell[cell]) for _, cell in terms)))
        if not seeds:
            return None
        per_seed = []
        for seed in seeds:
            values = [statistic(self.by_cell[cell][seed]) for _, cell in terms]
            if any(v is None for v in values):
                return None
            per_seed.append(sum(w * v for (w, _), v in zip(terms, values, strict=True)))
        rows = np.array(per_seed)  # (seeds, 1 + resamples)
        return estimate(rows[:, 0], rows[:, 1:].mean(axis=0), rows[:, 1:], self.unbiased)

    def metric_for(self, terms: Sequence[tuple[float, Cell]], metric: str) -> str | None:
        """`metric`, or RATIO for CIDEr-D across different test sets (None for other scores there)."""
        image_sets = {run.per_image.test_set for _, cell in terms if cell in self.by_cell
                      for run in self.by_cell[cell].values()}
        if len(image_sets) <= 1:
            return metric
        return RATIO if metric == "cider" else None

    def _compare(self, kind: str, factor: str, label: str, within: str,
                 terms: list[tuple[float, Cell]], metric: str) -> Comparison | None:
        used = self.metric_for(terms, metric)
        if used is None:
            return None
        if used == RATIO:
            return self.against_humans(kind, factor, label, within, used, terms, self.statistic(used))
        return Comparison(kind, factor, label, within, used, self.combine(terms, self.statistic(used)))

    def _others(self, *factors: str) -> list[tuple[str, ...]]:
        """Every combination of the other factors' values that some cell has."""
        rest = [i for i, f in enumerate(self.factors) if f not in factors]
        return sorted({tuple(cell[i] for i in rest) for cell in self.by_cell}, key=str)

    def _cell(self, fixed: dict[str, str], rest_values: tuple[str, ...], *factors: str) -> Cell:
        rest = iter(rest_values)
        return tuple(fixed[f] if f in factors else next(rest) for f in self.factors)

    def effects(self, factor: str, metric: str) -> list[Comparison]:
        """Each level against the first: on average, then within each cell of the other factors."""
        levels = self.levels[factor]
        found = []
        for level in levels[1:]:
            label = f"{level} - {levels[0]}"
            pairs = [(self._cell({factor: level}, rest, factor),
                      self._cell({factor: levels[0]}, rest, factor), rest) for rest in self._others(factor)]
            pairs = [(a, b, rest) for a, b, rest in pairs if a in self.by_cell and b in self.by_cell]
            if not pairs:
                found.append(Comparison("effect", factor, label, "", metric, None))
                continue
            terms = [t for a, b, _ in pairs for t in ((1 / len(pairs), a), (-1 / len(pairs), b))]
            found.append(self._compare("effect", factor, label, "", terms, metric))
            if len(pairs) > 1:
                rest_factors = [f for f in self.factors if f != factor]
                for a, b, rest in pairs:
                    within = " ".join(f"{f}={v}" for f, v in zip(rest_factors, rest, strict=True))
                    terms = [(1.0, a), (-1.0, b)]
                    found.append(self._compare("within", factor, label, within, terms, metric))
        return [c for c in found if c is not None]

    def interactions(self, metric: str) -> list[Comparison]:
        """For two factors: (A's effect at B's level) - (A's effect at B's reference), averaged over
        the rest."""
        found = []
        for first, second in itertools.combinations(self.factors, 2):
            if not self.levels[first] or not self.levels[second]:  # no completed run
                continue
            a0, b0 = self.levels[first][0], self.levels[second][0]
            for a1, b1 in itertools.product(self.levels[first][1:], self.levels[second][1:]):
                groups = []
                for rest in self._others(first, second):
                    cells = [self._cell({first: a, second: b}, rest, first, second)
                             for a, b in ((a1, b1), (a0, b1), (a1, b0), (a0, b0))]
                    if all(c in self.by_cell for c in cells):
                        groups.append(cells)
                label = f"({a1} - {a0}) at {second}={b1} - at {second}={b0}"
                terms = [(sign / len(groups), cell) for cells in groups
                         for sign, cell in zip((1, -1, -1, 1), cells, strict=True)]
                comparison = self._compare("interaction", f"{first} x {second}", label, "", terms, metric) \
                    if groups else Comparison("interaction", f"{first} x {second}", label, "", metric, None)
                if comparison is not None:
                    found.append(comparison)
        return found

    def level_means(self, factor: str, metric: str) -> dict[str, Estimate | None]:
        """Each level's mean score over its cells (the charts' bars and error bars)."""
        means = {}
        for level in self.levels[factor]:
            cells = self.cells_with(**{factor: level})
            terms = [(1 / len(cells), cell) for cell in cells]
            means[level] = self.combine(terms, self.statistic(metric)) \
                if cells and self.metric_for(terms, metric) == metric else None
        return means
