"""The report's intervals, tested as statistics on simulated per-image scores with a known truth."""

import numpy as np
import pytest

from captioner.compare.bootstrap import ImageResampler, RunScores, contrast, resample_weights

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
    # pairing removes the shared difficulty: the widths' ratio is sqrt((var a + var b) / var(a - b)) of
    # these very scores (about 2 here), up to the bootstrap's own noise
    expected = np.sqrt((better.cider.var() + base.cider.var()) / (better.cider - base.cider).var())
    ratio = (unpaired.high - unpaired.low) / (paired.high - paired.low)
    assert ratio == pytest.approx(expected, rel=0.12) and ratio > 1.5
    assert unpaired.estimate == pytest.approx(paired.estimate)


def test_resample_weights_draw_every_image_count_once_per_row():
    weights = resample_weights(50, 400, np.random.default_rng(0))
    assert weights.shape == (400, 50) and (weights.sum(axis=1) == 50).all()
    assert weights.mean() == pytest.approx(1.0) and 0.3 < (weights == 0).mean() < 0.45  # e^-1 left out


def test_the_resampler_pairs_runs_on_one_test_set_and_keeps_other_test_sets_apart():
    resampler = ImageResampler(resamples=50, seed=0)
    forward = resampler.weights(["a", "b", "c"])
    backward = resampler.weights(["c", "b", "a"])
    assert forward.shape == (51, 3) and (forward[0] == 1).all()  # row 0: the test set as it is
    assert (backward == forward[:, ::-1]).all()  # the same draws, in each run's own image order
    other = resampler.weights(["x", "y", "z"])
    assert not (other[1:] == forward[1:]).all()  # another test set: drawn on its own
