"""The report's one decision rule (`conf/claims.yaml`): which score decides, the equivalence
margins, and the words every verdict uses.

- better / worse: the 1 - alpha interval (95% at alpha 0.05) leaves out 0;
- equivalent: TOST, the 1 - 2 alpha interval (90%) inside +-margin;
- inconclusive: neither; or too few seeds to measure training's randomness.

A comparison's p-value is that of the verdict it would get alone. Holm's step-down correction then
runs over all of a report's verdicts at once: a verdict whose adjusted p-value reaches alpha
becomes inconclusive.
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
                + ("Holm's correction runs over every verdict in this report at once."
                   if self.correction == "holm" else "No correction for multiple verdicts."))


def percent(confidence: float) -> str:
    """0.95 -> "95%" (0.9 -> "90%", not "90.00000000000001%")."""
    return f"{round(100 * confidence, 6):g}%"


def load_rule(path: Path = DEFAULT_CLAIMS) -> DecisionRule:
    """The rule in a claims YAML file; a missing or bad value is an error that names the file."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
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
    """One comparison judged by the rule: `word` alone, `adjusted_p` after Holm over the report."""

    label: str
    measure: str  # which margin applies: cider | ratio | share | speed
    estimate: Estimate
    candidate: str  # the word the comparison earns alone
    p: float  # that word's p-value (for inconclusive: the smaller of its two)
    adjusted_p: float | None = None  # None: not tested (too few seeds)
    seeds_required: int = 3
    alpha: float = 0.05

    @property
    def tested(self) -> bool:
        return self.estimate.seeds >= self.seeds_required

    @property
    def confidence(self) -> float:
        """Of the interval shown with it: leaving out 0 is what better/worse means."""
        return 1 - self.alpha

    @property
    def word(self) -> str:
        """The verdict, after the correction."""
        if not self.tested:
            return f"{INCONCLUSIVE} ({self.estimate.seeds} seed{'s' if self.estimate.seeds != 1 else ''})"
        p = self.p if self.adjusted_p is None else self.adjusted_p
        return self.candidate if self.candidate != INCONCLUSIVE and p < self.alpha else INCONCLUSIVE


def judge(label: str, estimate: Estimate, measure: str, rule: DecisionRule) -> Verdict:
    """The verdict a comparison earns on its own (before the report's correction)."""
    p_zero, p_equivalent = estimate.p_zero(), estimate.p_equivalent(rule.margin(measure))
    if p_zero < rule.alpha:
        candidate, p = (BETTER if estimate.value > 0 else WORSE), p_zero
    elif p_equivalent < rule.alpha:
        candidate, p = EQUIVALENT, p_equivalent
    else:
        candidate, p = INCONCLUSIVE, min(p_zero, p_equivalent)
    return Verdict(label, measure, estimate, candidate, p, seeds_required=rule.seeds_required,
                   alpha=rule.alpha)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def corrected(verdicts: Sequence[Verdict], rule: DecisionRule) -> list[Verdict]:
    """Every verdict of a report with Holm's adjusted p-value (over the tested ones: those with
    enough seeds), in the input order."""
    tested = [i for i, v in enumerate(verdicts) if v.tested]
    adjusted = holm([verdicts[i].p for i in tested]) if rule.correction == "holm" \
        else [verdicts[i].p for i in tested]
    result = list(verdicts)
    for i, p in zip(tested, adjusted, strict=True):
        result[i] = replace(result[i], adjusted_p=p)
    return result
