"""A run's per-image test scores, as captions.json records them: what the sweep report resamples.

CIDEr-D per image (with the test split's document frequencies fixed, the corpus score is their
mean) and BLEU's sufficient statistics per image (the corpus BLEU sums them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captioner.scoring.bleu_statistics import corpus_bleu

METRICS = ("cider", "bleu4")
TestSet = tuple[str, ...]  # a test set: its image ids, sorted


@dataclass(frozen=True)
class RunScores:
    """One run's per-image test values, in the order of `image_ids`."""

    image_ids: tuple[str, ...]
    cider: np.ndarray  # (images,)
    bleu_counts: np.ndarray  # (images, 10)

    @property
    def test_set(self) -> TestSet:
        """The images scored, as a key: the runs on one test set share it."""
        return tuple(sorted(self.image_ids))

    def score(self, metric: str, weights: np.ndarray | None = None) -> np.ndarray:
        """The corpus score, or one per row of `weights` (resamples x images: how often each
        image is drawn)."""
        if weights is None:
            weights = np.ones((1, len(self.image_ids)))
            return self.score(metric, weights)[0]
        if metric == "cider":
            return weights @ self.cider / weights.sum(axis=1)
        if metric == "bleu4":
            return corpus_bleu(weights @ self.bleu_counts)
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
