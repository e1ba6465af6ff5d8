"""The vectorised CIDEr-D equals pycocoevalcap's Cider on the same tokenized captions."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from captioner.scoring.cider import CiderD, cider_d
from captioner.scoring.coco_metrics import ptb_tokenize

WORDS = ["a", "the", "red", "blue", "green", "small", "large", "circle", "square", "triangle", "is", "on",
         "left", "right", "of", "above", "below", "and", "next", "to", "two", "three", "dog", "runs", "grass"]


def _caption(rng: random.Random, low: int, high: int) -> str:
    words = rng.choices(WORDS, k=rng.randint(low, high))
    if words and rng.random() < 0.3:  # punctuation and capitals, which the PTB tokenizer handles
        words[0] = words[0].capitalize()
        words[-1] += rng.choice([".", "!", ","])
    return " ".join(words)


def _corpus(seed: int, images: int) -> tuple[dict[int, list[str]], dict[int, str]]:
    """Raw references (1 to 7 per image, 0 to 14 words) and one candidate per image."""
    rng = random.Random(seed)
    references = {i: [_caption(rng, 0, 14) for _ in range(rng.randint(1, 7))] for i in range(images)}
    results = {i: _caption(rng, 0, 16) + rng.choice(["", " zebra", " unseen words here"])
               for i in range(images)}
    results[0] = ""                                     # an empty candidate
    results[1] = "a a a a a a a a"                      # one unigram, repeated
    results[2] = "the red circle the red circle the red circle"  # repeated bigrams and trigrams
    results[3] = references[3][0]                       # a reference itself
    references[4] = ["a red circle"]                    # one reference
    references[5] = ["a red circle"] * 7                # the same reference many times
    results[5] = "a red circle"
    return references, results


def _pycocoevalcap(references: dict, results: dict) -> tuple[float, np.ndarray]:
    score, scores = Cider().compute_score(references, {k: [v] for k, v in results.items()})
    return float(score), np.asarray(scores)


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_pycocoevalcap_on_ptb_tokenized_captions(seed):
    raw_references, raw_results = _corpus(seed, images=120)
    references = ptb_tokenize(raw_references)  # the project's path: Java PTB tokenizer (or its Python twin)
    results = {k: v[0] for k, v in ptb_tokenize({k: [v] for k, v in raw_results.items()}).items()}
    expected_mean, expected = _pycocoevalcap(references, results)
    mean, scores = cider_d(results, references)
    assert scores.shape == (120,)
    assert np.abs(scores - expected).max() < 1e-6
    assert mean == pytest.approx(expected_mean, abs=1e-6)
    assert scores[0] == 0.0 and scores[3] > scores[1]  # the cases above were scored, not skipped
    assert expected.std() > 0.1  # varied scores, not all zero


def test_document_frequencies_from_another_corpus():
    # pycocoevalcap takes document frequencies from the images it scores: score all of them,
    # then a subset scored with the whole corpus's frequencies must give the same numbers.
    references, results = _corpus(2, images=80)
    _, expected = _pycocoevalcap(references, results)
    subset = [7, 3, 40, 41, 79, 3]  # any order, an image twice
    cider = CiderD({i: references[i] for i in subset}, document_frequency_from=references)
    assert np.abs(cider.score([results[i] for i in subset], subset) - expected[subset]).max() < 1e-6
    # ... and differ from frequencies of the subset alone (so the option does something).
    alone = CiderD({i: references[i] for i in subset}).score([results[i] for i in subset], subset)
    assert np.abs(alone - expected[subset]).max() > 1e-3


def test_many_candidates_per_image_and_ids_match_words():
    references, results = _corpus(3, images=30)
    cider = CiderD(references)
    keys = [k for k in references for _ in range(4)]
    candidates = [results[(k + j) % 30] for j, k in enumerate(keys)]
    by_words = cider.score(candidates, keys)
    ids, lengths = cider.encode(candidates)
    by_ids = cider.score_ids(ids, lengths, np.array([cider.row_of[k] for k in keys]))
    np.testing.assert_array_equal(by_words, by_ids)
    for key, candidate, score in zip(keys[:40], candidates[:40], by_words[:40], strict=True):
        assert score == pytest.approx(cider.score([candidate], [key])[0], abs=1e-12)  # batch-independent


def test_single_image_scores_zero_like_pycocoevalcap():
    references = {"only": ["a red circle", "a blue square"]}
    assert cider_d({"only": "a red circle"}, references)[0] == 0.0 == _pycocoevalcap(
        references, {"only": "a red circle"})[0]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="image 'b' has no reference"):
        CiderD({"a": ["x y"], "b": []})
    with pytest.raises(KeyError, match="no references for image 'c'"):
        CiderD({"a": ["x y"], "b": ["y z"]}).score(["x"], ["c"])
    with pytest.raises(ValueError, match="same image keys"):
        cider_d({"a": "x"}, {"a": ["x"], "b": ["y"]})
