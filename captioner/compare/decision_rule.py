"""The report's one decision rule (`conf/claims.yaml`): which score decides, the equivalence
margins, and the words every verdict uses.

- better / worse: the 1 - alpha interval (95% at alpha 0.05) leaves out 0;
- equivalent: TOST, the 1 - 2 alpha interval (90%) inside +-margin;
- inconclusive: neither; or too few seeds to measure training's randomness.

Each comparison tests two hypotheses: "no difference" (rejected: better/worse) and "a difference
beyond the margin" (rejected: equivalent). The correction runs over both hypotheses of every
verdict in a report at once: Holm's step-down, whose multiplier at each step is the most hypotheses
that can still be true together (Shaffer's refinement): at most one of a comparison's two, since no
difference lies inside any margin. Correcting only the hypothesis each comparison chose alone let
a true "no difference" in, at the uncorrected level, among comparisons that were otherwise
equivalent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from captioner.compare.combined_interval import Estimate

DEFAULT_CLAIMS = Path(__file__).resolve().parents[1] / "conf" / "claims.yaml"  # captioner/conf/
BETTER, WORSE, EQUIVALENT, INCONCLUSIVE = "better", "worse", "equivalent", "inconclusive"
MEASURES = ("cider", "ratio", "share", "speed")
INTERVALS = ("conservative", "unbiased")


@dataclass(frozen=True)
class DecisionRule:
    decides: str
    shown_beside: tuple[str, ...]
    alpha: float
    seeds_required: int
    correction: str  # holm | none
    margins: dict[str, float]
    source: Path
    interval: str = "conservative"  # conservative | unbiased (combined_interval.py)

    def margin(self, measure: str) -> float:
        return self.margins[measure]

    @property
    def confidence(self) -> float:
        """Of the intervals the report shows: the one whose leaving out 0 means better/worse."""
        return 1 - self.alpha

    @property
    def equivalence_confidence(self) -> float:
        """Of the interval TOST puts inside +-margin."""
        return 1 - 2 * self.alpha

    def describe(self) -> str:
        """The rule in one paragraph, for the report."""
        margins = ", ".join(f"{k} {v:g}" for k, v in self.margins.items())
        return (f"Decision rule (`{self.source.name}`): **better/worse** when the "
                f"{percent(self.confidence)} interval leaves out 0; **equivalent** when the "
                f"{percent(self.equivalence_confidence)} interval lies inside +-margin "
                f"(TOST; margins: {margins}); "
                f"**inconclusive** otherwise, and for any comparison with fewer than {self.seeds_required} "
                f"seeds a side. Intervals cover training's randomness (seeds) and the test sample (a "
                f"paired bootstrap over images) together, with Welch-Satterthwaite degrees of freedom"
                + (" (conservative: each run's own caption noise counts in both). "
                   if self.interval == "conservative" else
                   " (unbiased: each run's own caption noise, counted in both, is taken out of the "
                   "images' part once). ")
                + ("Holm's correction runs over both tests of every verdict in this report at once "
                   "(no difference; a difference beyond the margin), counting at most one of a "
                   "comparison's two as possibly true (Shaffer). The intervals shown are each "
                   "comparison's own, uncorrected: one that leaves out 0 beside \"inconclusive\" is a "
                   "word the correction took back."
                   if self.correction == "holm" else "No correction for multiple verdicts."))


def percent(confidence: float) -> str:
    """0.95 -> "95%" (0.9 -> "90%", not "90.00000000000001%")."""
    return f"{round(100 * confidence, 6):g}%"


def load_rule(path: Path = DEFAULT_CLAIMS) -> DecisionRule:
    """The rule in a claims YAML file; a missing or bad value is an error that names the file."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the decision rule ({error})") from error
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping with decides, alpha, seeds_required, margins, ...")
    problems = []
    margins = loaded.get("margins")
    if not isinstance(margins, dict) or not all(isinstance(margins.get(m), (int, float)) and margins[m] > 0
                                                for m in MEASURES):
        problems.append(f"margins must give a positive number for each of {', '.join(MEASURES)}")
    alpha = loaded.get("alpha")
    if not isinstance(alpha, float) or not 0 < alpha < 0.5:
        problems.append(f"alpha must be a number between 0 and 0.5, got {alpha!r}")
    seeds = loaded.get("seeds_required")
    if not isinstance(seeds, int) or seeds < 2:
        problems.append(f"seeds_required must be a whole number >= 2, got {seeds!r}")
    if loaded.get("correction") not in ("holm", "none"):
        problems.append(f"correction must be holm or none, got {loaded.get('correction')!r}")
    if loaded.get("interval", "conservative") not in INTERVALS:
        problems.append(f"interval must be {' or '.join(INTERVALS)}, got {loaded.get('interval')!r}")
    if loaded.get("decides") not in ("cider", "bleu4"):
        problems.append(f"decides must be cider or bleu4, got {loaded.get('decides')!r}")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return DecisionRule(loaded["decides"], tuple(loaded.get("shown_beside") or ()), float(alpha), seeds,
                        loaded["correction"], {m: float(margins[m]) for m in MEASURES}, path,
                        loaded.get("interval", "conservative"))


@dataclass(frozen=True)
class Verdict:
    """One comparison judged by the rule: `candidate` alone, `word` after the report's correction."""

    label: str
    measure: str  # which margin applies: cider | ratio | share | speed
    estimate: Estimate
    p_difference: float  # of "no difference" (the interval leaving out 0)
    p_equivalence: float  # of "a difference beyond the margin" (TOST)
    adjusted: tuple[float, float] | None = None  # both after the correction; None: not corrected
    seeds_required: int = 3
    alpha: float = 0.05

    @property
    def tested(self) -> bool:
        return self.estimate.seeds >= self.seeds_required

    @property
    def confidence(self) -> float:
        """Of the interval shown with it: leaving out 0 is what better/worse means."""
        return 1 - self.alpha

    def _word(self, p_difference: float, p_equivalence: float) -> str:
        if p_difference < self.alpha:
            return BETTER if self.estimate.value > 0 else WORSE
        return EQUIVALENT if p_equivalence < self.alpha else INCONCLUSIVE

    @property
    def candidate(self) -> str:
        """The word the comparison earns alone, before the correction."""
        return self._word(self.p_difference, self.p_equivalence)

    @property
    def p(self) -> float:
        """The p-value the candidate rests on (inconclusive: the smaller of the two)."""
        return _resting_on(self.candidate, self.p_difference, self.p_equivalence)

    @property
    def adjusted_p(self) -> float | None:
        """The corrected p-value the word rests on; None when not tested (too few seeds)."""
        if not self.tested or self.adjusted is None:
            return None
        return _resting_on(self._word(*self.adjusted), *self.adjusted)

    @property
    def word(self) -> str:
        """The verdict, after the correction."""
        if not self.tested:
            return f"{INCONCLUSIVE} ({self.estimate.seeds} seed{'s' if self.estimate.seeds != 1 else ''})"
        return self._word(*(self.adjusted or (self.p_difference, self.p_equivalence)))


def _resting_on(word: str, p_difference: float, p_equivalence: float) -> float:
    if word in (BETTER, WORSE):
        return p_difference
    return p_equivalence if word == EQUIVALENT else min(p_difference, p_equivalence)


def judge(label: str, estimate: Estimate, measure: str, rule: DecisionRule) -> Verdict:
    """The comparison's two tests (before the report's correction)."""
    return Verdict(label, measure, estimate, estimate.p_zero(), estimate.p_equivalent(rule.margin(measure)),
                   seeds_required=rule.seeds_required, alpha=rule.alpha)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    return [p for (p,) in holm_with_at_most_one_true([(p,) for p in p_values])]


def holm_with_at_most_one_true(groups: Sequence[Sequence[float]]) -> list[tuple[float, ...]]:
    """Step-down adjusted p-values of hypotheses in groups of which at most one can be true (Shaffer's
    refinement of Holm): at each step, in order of p, the multiplier is the number of groups with a
    hypothesis not yet rejected. Groups of one are Holm's own procedure."""
    order = sorted((p, g, h) for g, group in enumerate(groups) for h, p in enumerate(group))
    adjusted = [list(group) for group in groups]
    open_in = [len(group) for group in groups]  # hypotheses not yet stepped past, per group
    open_groups, running = sum(1 for n in open_in if n), 0.0
    for p, g, h in order:
        running = max(running, min(1.0, open_groups * p))
        adjusted[g][h] = running
        open_in[g] -= 1
        open_groups -= open_in[g] == 0
    return [tuple(group) for group in adjusted]


def corrected(verdicts: Sequence[Verdict], rule: DecisionRule) -> list[Verdict]:
    """Every verdict of a report with both of its tests corrected over the report (the tested
    verdicts: those with enough seeds), in the input order."""
    tested = [i for i, v in enumerate(verdicts) if v.tested]
    pairs = [(verdicts[i].p_difference, verdicts[i].p_equivalence) for i in tested]
    adjusted = holm_with_at_most_one_true(pairs) if rule.correction == "holm" else pairs
    result = list(verdicts)
    for i, pair in zip(tested, adjusted, strict=True):
        result[i] = replace(result[i], adjusted=(pair[0], pair[1]))
    return result
