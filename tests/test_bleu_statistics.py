"""Per-image scores that rebuild coco-caption's corpus scores on any subset of the images."""

import random

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from captioner.scoring.bleu_statistics import COUNTS, bleu_counts, corpus_bleu
from captioner.scoring.coco_metrics import score_captions_per_image

WORDS = ["a", "the", "dog", "man", "red", "ball", "runs", "on", "grass", "two", "people", "sit", "bench",
         "blue", "water", "jumps"]


def _random_corpus(images: int, seed: int) -> tuple[dict, dict]:
    rng = random.Random(seed)
    sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))  # noqa: E731
    references = {i: [sentence() for _ in range(rng.randint(1, 5))] for i in range(images)}
    results = {i: sentence() if i % 7 else references[i][0] for i in range(images)}
    return results, references


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summed_counts_give_pycocoevalcaps_corpus_bleu(seed):
    results, references = _random_corpus(60, seed)
    gts, res = references, {i: [c] for i, c in results.items()}
    expected, _ = Bleu(4).compute_score(gts, res, verbose=0)
    counts = np.array([bleu_counts(results[i], references[i]) for i in results])
    assert counts.shape == (60, len(COUNTS))
    for n in range(1, 5):
        assert corpus_bleu(counts.sum(axis=0), n) == pytest.approx(expected[n - 1], rel=1e-12)
    # a subset is a corpus of its own: the counts of its images give its BLEU
    subset = [i for i in results if i % 3 == 0]
    on_subset, _ = Bleu(4).compute_score({i: gts[i] for i in subset}, {i: res[i] for i in subset}, verbose=0)
    assert corpus_bleu(counts[subset].sum(axis=0)) == pytest.approx(on_subset[3], rel=1e-12)


def test_counts_of_a_batch_of_resamples_at_once():
    results, references = _random_corpus(30, 5)
    counts = np.array([bleu_counts(results[i], references[i]) for i in results])
    weights = np.random.default_rng(0).integers(0, 3, size=(4, 30)).astype(float)
    batched = corpus_bleu(weights @ counts)
    one_by_one = [corpus_bleu((w[:, None] * counts).sum(axis=0)) for w in weights]
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-12)


def test_per_image_values_rebuild_the_corpus_scores():
    results, references = _random_corpus(40, 9)
    scores, per_image = score_captions_per_image(results, references, meteor=False)
    assert set(per_image) == set(results)
    assert np.mean([v["cider"] for v in per_image.values()]) == pytest.approx(scores["cider"], rel=1e-9)
    summed = np.sum([v["bleu_counts"] for v in per_image.values()], axis=0)
    assert corpus_bleu(summed) == pytest.approx(scores["bleu4"], rel=1e-9)
    # CIDEr-D per image is pycocoevalcap's own (these lower-case words pass the PTB tokenizer as they are)
    _, expected = Cider().compute_score(references, {i: [c] for i, c in results.items()})
    np.testing.assert_allclose([per_image[i]["cider"] for i in references], expected, rtol=1e-12)
