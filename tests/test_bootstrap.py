"""The report's intervals, tested as statistics on simulated per-image scores with a known truth."""

import numpy as np
import pytest

from captioner.compare.bootstrap import RunScores, contrast, resample_weights, seed_interval

REPEATS = 200


def _pair(rng: np.random.Generator, images: int, difference: float) -> tuple[RunScores, RunScores]:
    """Two runs on the same images: a shared per-image difficulty, the second better by `difference`
    on average (over the population of images), each with noise of its own."""
    difficulty = rng.gamma(2.0, 0.25, images)  # skewed, like per-image CIDEr-D
    ids = tuple(f"img{i}" for i in range(images))
    counts = np.zeros((images, 10))
    first = RunScores(ids, difficulty + rng.normal(0, 0.2, images), counts)
    second = RunScores(ids, difficulty + difference + rng.normal(0, 0.2, images), counts)
    return second, first


@pytest.mark.parametrize("difference", [0.0, 0.05])
def test_the_paired_interval_covers_the_true_difference_about_95_percent_of_the_time(difference):
    rng = np.random.default_rng(1)
    covered = 0
    for repeat in range(REPEATS):
        better, base = _pair(rng, 300, difference)
        interval = contrast([better], [base], "cider", resamples=500, seed=repeat)
        covered += interval.low <= difference <= interval.high
        assert interval.paired
    # 95% nominal; 200 repeats give a binomial sd of 1.5 points (percentile intervals run a bit narrow)
    assert 0.90 <= covered / REPEATS <= 0.99, covered
    if difference == 0.0:  # a zero difference is called "not significant" about 95% of the time
        assert covered / REPEATS >= 0.90


def test_a_real_difference_is_found_significant_and_pairing_narrows_the_interval():
    rng = np.random.default_rng(2)
    better, base = _pair(rng, 1000, 0.05)
    paired = contrast([better], [base], "cider")
    assert paired.significant and paired.low > 0 and paired.paired
    # the same scores under other image names cannot be paired: resampled apart, wider
    renamed = RunScores(tuple(f"other{i}" for i in range(1000)), base.cider, base.bleu_counts)
    unpaired = contrast([better], [renamed], "cider")
    assert not unpaired.paired
    assert unpaired.high - unpaired.low > 2 * (paired.high - paired.low)
    assert unpaired.estimate == pytest.approx(paired.estimate)


def test_resample_weights_draw_every_image_count_once_per_row():
    weights = resample_weights(50, 400, np.random.default_rng(0))
    assert weights.shape == (400, 50) and (weights.sum(axis=1) == 50).all()
    assert weights.mean() == pytest.approx(1.0) and 0.3 < (weights == 0).mean() < 0.45  # e^-1 left out


def test_a_seed_interval_is_a_t_interval_and_needs_two_seeds():
    assert seed_interval([0.1]) is None
    interval = seed_interval([0.1, 0.2, 0.3])
    # mean 0.2, sd 0.1, t(0.975, 2) = 4.303: half-width 4.303 * 0.1 / sqrt(3) = 0.2484
    assert interval.estimate == pytest.approx(0.2)
    assert (interval.low, interval.high) == pytest.approx((0.2 - 0.24843, 0.2 + 0.24843), abs=1e-4)
    assert not interval.significant
