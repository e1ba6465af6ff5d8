"""Main effects of a sweep's factors with their uncertainty.

The effect of level B of a factor (against its first level A) is the mean difference between
runs that differ only in that factor: each run at B is matched with the run at A that has the
same value of every other swept override (seed included). Two kinds of uncertainty:

- test images: a paired bootstrap over the test images (`bootstrap.contrast`). It says how much
  the difference would move on another test sample of the same size, for these trained models.
- seeds: when `seed` is swept, the difference is measured once per seed and a t-interval over
  seeds says how much it moves with training's randomness (initialisation, batch order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from captioner.compare.bootstrap import Interval, RunScores, contrast, seed_interval
from captioner.records.sweep_runs import RunResult

REPLICATE = "seed"  # a swept seed repeats settings; it is not a factor with an effect of its own


@dataclass(frozen=True)
class Effect:
    factor: str
    level: str
    reference: str
    metric: str
    images: Interval | None  # None: no pair of runs with per-image scores
    seeds: Interval | None  # None: fewer than two seeds
    pairs: int  # matched pairs of completed runs
    unmatched: int  # runs at `level` or `reference` without a partner


def factor_levels(runs: Sequence[RunResult], factor: str) -> list[str]:
    """The factor's values in the order the sweep gave them."""
    levels: list[str] = []
    for run in runs:
        if (value := run.overrides.get(factor, "-")) not in levels:
            levels.append(value)
    return levels


def matched_pairs(runs: Sequence[RunResult], factors: Sequence[str], factor: str, level: str,
                  reference: str) -> tuple[list[tuple[Any, Any]], int]:
    """(run at `level`, run at `reference`) pairs equal in every other factor, both with per-image
    scores; and how many runs at either level found no partner."""
    others = [f for f in factors if f != factor]

    def key(run: RunResult) -> tuple:
        return tuple(run.overrides.get(f, "-") for f in others)

    usable = [r for r in runs if r.status == "completed" and r.per_image is not None]
    at = {key(r): r for r in usable if r.overrides.get(factor, "-") == level}
    base = {key(r): r for r in usable if r.overrides.get(factor, "-") == reference}
    pairs = [(at[k], base[k]) for k in at if k in base]
    everyone = [r for r in runs if r.overrides.get(factor, "-") in (level, reference)]
    return pairs, len(everyone) - 2 * len(pairs)


def factor_effects(runs: Sequence[RunResult], factors: Sequence[str], factor: str, metrics: Sequence[str],
                   resamples: int = 1000) -> list[Effect]:
    """Each level's effect against the first level, per metric."""
    levels = factor_levels(runs, factor)
    effects = []
    for level in levels[1:]:
        pairs, unmatched = matched_pairs(runs, factors, factor, level, levels[0])
        for metric in metrics:
            scores = [(p.per_image, r.per_image) for p, r in pairs]
            images = (contrast([p for p, _ in scores], [r for _, r in scores], metric, resamples)
                      if scores else None)
            effects.append(Effect(factor, level, levels[0], metric, images,
                                  _over_seeds(pairs, scores, metric), len(pairs), unmatched))
    return effects


def _over_seeds(pairs: list[tuple[Any, Any]], scores: list[tuple[RunScores, RunScores]],
                metric: str) -> Interval | None:
    by_seed: dict[str, list[float]] = {}
    for (run, _), (plus, minus) in zip(pairs, scores, strict=True):
        seed = run.overrides.get(REPLICATE)
        if seed is not None:
            by_seed.setdefault(seed, []).append(float(plus.score(metric) - minus.score(metric)))
    return seed_interval([sum(d) / len(d) for d in by_seed.values()])
