"""How sure a difference between runs is: bootstrap intervals over the test images.

A run's test score is an estimate from a sample of images; another sample would give another
score. Resampling the images (with replacement) and scoring every run on each resample gives the
spread of that estimate. Paired: each resample draws the same images for every run, so what the
runs share (an easy image is easy for both) cancels out of their difference.

Each run is given by its per-image values (`RunScores`): CIDEr-D per image (the corpus score is
their mean) and BLEU counts per image (the corpus BLEU sums them, `bleu_statistics`). A resample
is a row of image counts, so all resamples of all runs are one matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from captioner.records.per_image_scores import RunScores

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A difference with its 95% interval; `paired` says whether the same images were drawn."""

    estimate: float
    low: float
    high: float
    paired: bool

    @property
    def significant(self) -> bool:
        """The interval leaves out zero."""
        return self.low > 0 or self.high < 0


def resample_weights(images: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, images) draw counts: each row draws `images` images with replacement."""
    draws = rng.integers(0, images, size=(resamples, images))
    cells = (draws + images * np.arange(resamples)[:, None]).ravel()
    return np.bincount(cells, minlength=resamples * images).reshape(resamples, images).astype(np.float64)


def same_images(runs: Sequence[RunScores]) -> bool:
    """Every run was scored on the same test images (so their differences can be paired)."""
    return all(set(run.image_ids) == set(runs[0].image_ids) for run in runs[1:])


def aligned(runs: Sequence[RunScores]) -> list[RunScores]:
    """The runs with their images in the first run's order (they must hold the same images)."""
    order = {image: i for i, image in enumerate(runs[0].image_ids)}
    result = []
    for run in runs:
        permutation = np.argsort([order[image] for image in run.image_ids])
        result.append(RunScores(runs[0].image_ids, run.cider[permutation], run.bleu_counts[permutation]))
    return result


def contrast(plus: Sequence[RunScores], minus: Sequence[RunScores], metric: str, resamples: int = 1000,
             seed: int = 0) -> Interval:
    """mean score of the `plus` runs - mean score of the `minus` runs, with a 95% percentile interval.

    Paired when all runs hold the same images (one set of resamples for all); otherwise each run's
    images are resampled on their own (unpaired: wider, as nothing shared cancels).
    """
    rng = np.random.default_rng(seed)
    everyone = [*plus, *minus]
    paired = same_images(everyone)
    if paired:
        everyone = aligned(everyone)
        weights = resample_weights(len(everyone[0].image_ids), resamples, rng)
        samples = [run.score(metric, weights) for run in everyone]
    else:
        samples = [run.score(metric, resample_weights(len(run.image_ids), resamples, rng))
                   for run in everyone]
    split = len(plus)
    estimate = (np.mean([run.score(metric) for run in everyone[:split]])
                - np.mean([run.score(metric) for run in everyone[split:]]))
    differences = np.mean(samples[:split], axis=0) - np.mean(samples[split:], axis=0)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), paired)


class ImageResampler:
    """One set of bootstrap resamples per test set, shared by every run scored on it.

    `weights(image_ids)` gives (1 + resamples, images) draw counts in the order of `image_ids`:
    row 0 draws every image once (the measured score), the other rows are resamples. Runs scored
    on the same images get the same resamples whatever their image order (paired); runs on other
    images get resamples of their own (a different test set is an independent sample).
    """

    def __init__(self, resamples: int = 1000, seed: int = 0):
        self.resamples = resamples
        self._rng = np.random.default_rng(seed)
        self._by_images: dict[tuple[str, ...], np.ndarray] = {}

    def weights(self, image_ids: Sequence[str]) -> np.ndarray:
        ordered = tuple(sorted(image_ids))
        if ordered not in self._by_images:
            drawn = resample_weights(len(ordered), self.resamples, self._rng)
            self._by_images[ordered] = np.vstack([np.ones((1, len(ordered))), drawn])
        position = {image: i for i, image in enumerate(ordered)}
        return self._by_images[ordered][:, [position[image] for image in image_ids]]
