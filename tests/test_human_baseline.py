"""The leave-one-reference-out human baseline, against a fixture computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from captioner.compare.human_baseline import colour_agreement, leave_one_out
from captioner.scoring.cider import CiderD

COLOURS = frozenset({"red", "blue", "black", "white"})
REFERENCES = {
    "car": ["a red car", "a red car", "a blue car"],
    "dog": ["a dog", "a black dog"],
}
CAPTIONS = {"run": {"car": "a red car", "dog": "a white dog"}}


def test_colours_named_and_right_by_hand():
    assert colour_agreement("a red and blue car", ["a red car", "a car"], COLOURS) == (2, 1)
    assert colour_agreement("a car", ["a red car"], COLOURS) == (0, 0)


def test_colour_agreement_of_humans_and_model_by_hand():
    found = leave_one_out(REFERENCES, CAPTIONS, COLOURS)
    assert found.image_ids == ("car", "dog")
    human, model = found.human, found.models["run"]
    # car: "a red car" held out twice (red is among the others: right), "a blue car" once (not)
    # dog: "a dog" names no colour; "a black dog" names black, which "a dog" does not
    assert human.colours_named == pytest.approx([1.0, 0.5])
    assert human.colours_right == pytest.approx([2 / 3, 0.0])
    assert human.right_colour == pytest.approx([2 / 3, 0.0])
    # the model: "a red car" is right against every rotation's others; "white" never is
    assert model.colours_named == pytest.approx([1.0, 1.0])
    assert model.colours_right == pytest.approx([1.0, 0.0])
    # precision over the test set: humans (2/3 + 0) / 1.5, the model 1 / 2
    assert human.colours_right.sum() / human.colours_named.sum() == pytest.approx(4 / 9)
    assert model.colours_right.sum() / model.colours_named.sum() == pytest.approx(0.5)


def test_cider_rotations_by_hand():
    """Each rotation's scorer is built by hand from the references left in, with their document
    frequencies over every image (one without a reference k keeps all of its own); the baseline
    averages an image's rotations (car: 3, dog: 2)."""
    found = leave_one_out(REFERENCES, CAPTIONS, COLOURS)
    rotations = [  # the references left in when reference k is held out
        {"car": ["a red car", "a blue car"], "dog": ["a black dog"]},
        {"car": ["a red car", "a blue car"], "dog": ["a dog"]},
        {"car": ["a red car", "a red car"], "dog": ["a dog", "a black dog"]},  # the dog has no third
    ]
    held_out = [{"car": "a red car", "dog": "a dog"}, {"car": "a red car", "dog": "a black dog"},
                {"car": "a blue car"}]
    human = {"car": [], "dog": []}
    model = {"car": [], "dog": []}
    for left_in, out in zip(rotations, held_out, strict=True):
        scorer = CiderD(left_in)
        for image in out:  # the images that have a reference k to hold out
            human[image].append(scorer.score([out[image]], [image])[0])
            model[image].append(scorer.score([CAPTIONS["run"][image]], [image])[0])
    assert found.human.cider == pytest.approx([np.mean(human["car"]), np.mean(human["dog"])])
    assert found.models["run"].cider == pytest.approx([np.mean(model["car"]), np.mean(model["dog"])])
    assert (found.human.cider > 0).all()  # a fixture where the scores are not all zero


def test_images_with_one_reference_are_left_out_and_none_left_is_an_error():
    found = leave_one_out({**REFERENCES, "lone": ["one caption"]},
                          {"run": {**CAPTIONS["run"], "lone": "x"}}, COLOURS)
    assert "lone" not in found.image_ids
    with pytest.raises(ValueError, match="two references"):
        leave_one_out({"lone": ["one caption"]}, {"run": {"lone": "x"}}, COLOURS)
