"""Corpus BLEU from per-image counts, so any resample of the images is scored without the text.

Corpus BLEU is not a mean of per-image scores: it sums each image's n-gram counts and lengths,
then combines the sums. An image's counts are the 10 numbers coco-caption's BleuScorer sums
(`COUNTS`); `corpus_bleu` combines them exactly as it does (its `closest` reference length and
its tiny/small constants), for one sum or for a whole batch of bootstrap resamples at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

MAX_N = 4
# hypothesis length, closest reference length, then per n: n-grams guessed, n-grams correct
COUNTS = ("test_length", "reference_length", *(f"guess{n}" for n in range(1, MAX_N + 1)),
          *(f"correct{n}" for n in range(1, MAX_N + 1)))
_TINY, _SMALL = 1e-15, 1e-9  # coco-caption's BleuScorer constants


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def bleu_counts(hypothesis: str, references: Sequence[str]) -> list[int]:
    """The `COUNTS` of one tokenized hypothesis against its tokenized references."""
    words = hypothesis.split()
    reference_words = [r.split() for r in references]
    # coco-caption's "closest": the reference length nearest the hypothesis, the shorter on a tie
    closest = min((abs(len(r) - len(words)), len(r)) for r in reference_words)[1]
    guessed, correct = [], []
    for n in range(1, MAX_N + 1):
        most = Counter()
        for reference in reference_words:
            for gram, count in _ngrams(reference, n).items():
                most[gram] = max(most[gram], count)
        grams = _ngrams(words, n)
        guessed.append(max(len(words) - n + 1, 0))
        correct.append(sum(min(count, most[gram]) for gram, count in grams.items()))
    return [len(words), closest, *guessed, *correct]


def corpus_bleu(summed: np.ndarray, n: int = MAX_N) -> np.ndarray:
    """BLEU-n from summed `COUNTS` along the last axis: shape (..., 10) -> (...)."""
    summed = np.asarray(summed, dtype=np.float64)
    test_length, reference_length = summed[..., 0], summed[..., 1]
    guessed, correct = summed[..., 2:2 + MAX_N], summed[..., 2 + MAX_N:]
    precision = (correct[..., :n] + _TINY) / (guessed[..., :n] + _SMALL)
    bleu = np.prod(precision, axis=-1) ** (1.0 / n)
    ratio = (test_length + _TINY) / (reference_length + _SMALL)
    brevity = np.where(ratio < 1, np.exp(1 - 1 / np.maximum(ratio, _TINY)), 1.0)
    return bleu * brevity
