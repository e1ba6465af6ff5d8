"""The report's decision rule on data with a known truth: the combined interval's coverage, TOST,
Holm's correction and the rule file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from captioner.compare.bootstrap import ImageResampler
from captioner.compare.combined_interval import Estimate, estimate
from captioner.compare.decision_rule import (
    BETTER,
    DEFAULT_CLAIMS,
    EQUIVALENT,
    INCONCLUSIVE,
    WORSE,
    corrected,
    holm,
    judge,
    load_rule,
)

RULE = load_rule()


def simulated_comparison(rng: np.random.Generator, effect: float, seeds: int, images: int, seed_sd: float,
                         image_sd: float, resamples: int = 200, caption_sd: float = 0.0) -> Estimate:
    """Two settings, each trained once per seed and scored per image on one test sample.

    An image's score = its difficulty (shared by every run) + the setting's own way with that image
    (shared by its seeds: what another test sample would change) + the run's offset (training's
    randomness) + the run's own caption for that image (`caption_sd`: neither shared by the seeds
    nor fixed by the test sample) + the true effect on one side. The test sample is drawn anew
    each call."""
    difficulty = rng.normal(0, 1, images)
    own_way = rng.normal(0, image_sd, (2, images))
    scores = [[difficulty + own_way[side] + rng.normal(0, seed_sd) + rng.normal(0, caption_sd, images)
               + effect * side for _ in range(seeds)] for side in (0, 1)]
    resampler = ImageResampler(resamples, seed=int(rng.integers(1 << 30)))
    weights = resampler.weights([str(i) for i in range(images)])
    resampled = np.array([[weights @ run / weights.sum(axis=1) for run in side] for side in scores])
    per_seed = resampled[1, :, 0] - resampled[0, :, 0]
    differences = resampled[1, :, 1:] - resampled[0, :, 1:]  # seeds x resamples
    return estimate(per_seed, differences.mean(axis=0), differences)


@pytest.mark.parametrize("seed_sd, image_sd", [(0.05, 0.1), (0.002, 0.5)],
                         ids=["seed-noise-dominates", "image-noise-dominates"])
def test_the_combined_interval_covers_a_known_effect_90_to_99_percent_of_the_time(seed_sd, image_sd):
    rng = np.random.default_rng(7)
    effect, repeats = 0.03, 300
    covered = 0
    for _ in range(repeats):
        found = simulated_comparison(rng, effect, seeds=3, images=400, seed_sd=seed_sd, image_sd=image_sd)
        low, high = found.interval(0.95)
        covered += low <= effect <= high
    assert 0.90 <= covered / repeats <= 0.99


def test_the_interval_is_conservative_where_each_runs_own_captions_dominate():
    """Each run's caption noise per image (caption_sd) is counted twice: in the seeds' spread and in
    the image bootstrap of their mean. Measured on the Flickr8k comparison it is about half of
    s^2/n, so the intervals there are wider than they need be (never narrower): a documented
    limitation (combined_interval.py), pinned here so that a fix shows up as a change."""
    rng = np.random.default_rng(11)
    effect, repeats = 0.03, 300
    found = [simulated_comparison(rng, effect, seeds=3, images=400, seed_sd=0.002, image_sd=0.21,
                                  caption_sd=0.45) for _ in range(repeats)]
    covered = np.mean([low <= effect <= high for low, high in (f.interval(0.95) for f in found)])
    spread = np.std([f.value for f in found], ddof=1)
    assert covered >= 0.96  # rather than 0.95
    assert np.mean([f.standard_error for f in found]) > 1.1 * spread


@pytest.mark.parametrize("seed_sd, image_sd, caption_sd", [(0.002, 0.21, 0.45), (0.05, 0.1, 0.0)],
                         ids=["captions-dominate", "seed-noise-dominates"])
def test_the_unbiased_interval_covers_near_95_percent_with_or_without_caption_noise(seed_sd, image_sd,
                                                                                   caption_sd):
    """`interval: unbiased` takes the caption noise counted twice out of the images' part once."""
    rng = np.random.default_rng(11)
    effect, repeats = 0.03, 300
    found = []
    for _ in range(repeats):
        conservative = simulated_comparison(rng, effect, seeds=3, images=400, seed_sd=seed_sd,
                                            image_sd=image_sd, caption_sd=caption_sd)
        found.append(replace(conservative, unbiased=True))
    covered = np.mean([low <= effect <= high for low, high in (f.interval(0.95) for f in found)])
    ratio = np.mean([f.standard_error for f in found]) / np.std([f.value for f in found], ddof=1)
    assert 0.90 <= covered <= 0.99 and 0.85 <= ratio <= 1.15
    if caption_sd:  # there is something to take out, and it is what the conservative interval adds
        assert all(f.caption_variance > 0 and f.image_part < f.image_variance for f in found)


def test_seeds_alone_or_images_alone_would_not_cover_in_the_other_regime():
    """Why both parts: leave one out and coverage falls well below 95% where it dominates."""
    rng = np.random.default_rng(3)
    seed_only = image_only = 0
    for _ in range(200):
        images_dominate = simulated_comparison(rng, 0.0, 3, 400, seed_sd=0.002, image_sd=0.5)
        seed_only += Estimate(images_dominate.seed_values, 0.0).interval()[0] <= 0 <= \
            Estimate(images_dominate.seed_values, 0.0).interval()[1]
        seeds_dominate = simulated_comparison(rng, 0.0, 3, 400, seed_sd=0.05, image_sd=0.1)
        alone = Estimate((seeds_dominate.value,), seeds_dominate.image_variance)
        image_only += alone.interval()[0] <= 0 <= alone.interval()[1]
    assert seed_only / 200 < 0.8 and image_only / 200 < 0.8


@pytest.mark.parametrize("seed_sd, expected", [(0.005, EQUIVALENT), (0.03, INCONCLUSIVE)])
def test_tost_with_three_seeds_and_margin_0_02(seed_sd, expected):
    # per-seed differences with mean 0 and standard deviation exactly seed_sd
    exact = Estimate((-seed_sd, 0.0, seed_sd), image_variance=1e-6)
    assert judge("zero effect", exact, "cider", RULE).word == expected
    # and as a rate over simulated seeds, for a true zero effect
    rng = np.random.default_rng(11)
    words = [judge("zero", Estimate(tuple(rng.normal(0, seed_sd, 3)), 1e-6), "cider", RULE).word
             for _ in range(200)]
    assert words.count(expected) / len(words) >= 0.85


def test_the_verdict_words_follow_the_intervals():
    clear = Estimate((0.10, 0.11, 0.12), 1e-5)
    assert judge("up", clear, "cider", RULE).word == BETTER
    assert clear.interval()[0] > 0
    down = Estimate((-0.10, -0.11, -0.12), 1e-5)
    assert judge("down", down, "cider", RULE).word == WORSE
    # TOST is the 90% interval inside +-margin
    equivalent = judge("flat", Estimate((0.001, -0.002, 0.0), 1e-6), "cider", RULE)
    low, high = equivalent.estimate.interval(0.90)
    assert equivalent.word == EQUIVALENT and low > -0.02 and high < 0.02


def test_one_or_two_seeds_are_inconclusive_whatever_the_images_say():
    strong = Estimate((0.3,), 1e-6)
    assert judge("one seed", strong, "cider", RULE).word == "inconclusive (1 seed)"
    assert judge("two", Estimate((0.3, 0.31), 1e-6), "cider", RULE).word == "inconclusive (2 seeds)"


def test_holm_adjusts_step_down_and_can_turn_a_verdict_inconclusive():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    lone = judge("lone", Estimate((0.05, 0.06, 0.07), 0.00071), "cider", RULE)
    assert lone.word == BETTER and 0.01 < lone.p < 0.05
    sure = judge("sure", Estimate((0.2, 0.21, 0.2), 1e-6), "cider", RULE)
    after = corrected([lone, lone, sure], RULE)  # sure's "equivalent" may still be true: 3x lone's p
    assert after[0].adjusted_p == pytest.approx(3 * lone.p) and after[0].word == INCONCLUSIVE
    assert after[2].word == BETTER
    # a comparison both of whose tests are rejected (a real difference inside the margin) is out
    # of the count: the last open one keeps its own p
    both = judge("both", Estimate((0.009, 0.01, 0.011), 1e-7), "cider", RULE)
    assert both.p_difference < 0.001 and both.p_equivalence < 0.001
    assert corrected([lone, both], RULE)[0].adjusted_p == pytest.approx(lone.p)


def test_a_chance_difference_among_equivalent_comparisons_is_not_called_real():
    """Correcting only the test each comparison picked alone let a true "no difference" through at
    the uncorrected level once the other comparisons' (equivalence) tests were stepped past."""
    chance = judge("chance", Estimate((0.006, 0.01, 0.014), 1e-6), "cider", RULE)
    flat = judge("flat", Estimate((0.001, -0.002, 0.0), 1e-6), "cider", RULE)
    assert chance.candidate == BETTER and flat.candidate == EQUIVALENT
    after = corrected([chance, flat, flat, flat, flat], RULE)
    assert after[0].word == INCONCLUSIVE and after[0].adjusted_p == pytest.approx(5 * chance.p_equivalence)
    assert [v.word for v in after[1:]] == [EQUIVALENT] * 4
    # as a rate: ten comparisons with no difference, each precise enough to be equivalent alone
    # (seeds only: there the t test is exact); some "better" or "worse" among them must stay rare
    # (the family-wise error rate, alpha)
    rng = np.random.default_rng(3)
    wrong = 0
    for _ in range(300):
        family = [judge("zero", Estimate(tuple(rng.normal(0, 0.003, 3)), 0.0), "cider", RULE)
                  for _ in range(10)]
        wrong += any(v.word in (BETTER, WORSE) for v in corrected(family, RULE))
    assert wrong / 300 <= RULE.alpha + 0.03  # 0.047; correcting the test picked alone: 0.41


def test_degrees_of_freedom_move_from_seeds_to_images():
    assert Estimate((0.1, 0.2, 0.3), 0.0).degrees_of_freedom == pytest.approx(2)
    assert Estimate((0.1, 0.2, 0.3), 1.0).degrees_of_freedom > 1000
    assert Estimate((0.1,), 0.01).degrees_of_freedom == float("inf")


def test_a_bad_rule_file_is_named(tmp_path: Path):
    path = tmp_path / "claims.yaml"
    path.write_text("decides: cider\nalpha: 2\nseeds_required: 1\ncorrection: holm\nmargins: {cider: 0.02}\n")
    with pytest.raises(ValueError) as error:
        load_rule(path)
    message = str(error.value)
    assert str(path) in message and "alpha" in message and "seeds_required" in message and "ratio" in message
    path.write_text(DEFAULT_CLAIMS.read_text().replace("interval: conservative", "interval: narrow"))
    with pytest.raises(ValueError, match=r"interval must be conservative or unbiased, got 'narrow'"):
        load_rule(path)
    assert RULE.interval == "conservative"  # the declared rule of the committed reports
    path.write_text(DEFAULT_CLAIMS.read_text().replace("interval: conservative", "interval: unbiased"))
    assert load_rule(path).interval == "unbiased" and "unbiased" in load_rule(path).describe()
