"""The human yardstick: how well each image's own references agree, measured as the model is.

Leave one reference out: each of an image's references is held out in turn and scored against
the others, and the model's caption is scored against the same others; both are averaged over
the rotations. So model and humans face the same references (4 of Flickr8k's 5), and a group of
images (or a dataset) whose references agree less lowers both. "Weak on people" then reads "further
from humans on people than on animals", not "people's references disagree more".

Two measures per image, each for the model and for the held-out human:
- CIDEr-D, with the document frequencies of the rotation's references;
- colours: how many colour words the caption names, how many of them a reference (of the others)
  also names, and whether it names at least one such right colour. Precision = right / named over
  the images; recall = the share of colour images with a right colour.

Captions are tokenized in Python (`simple_ptb_tokenize`) on both sides, so no Java is needed and
the two sides are tokenized alike; the values differ slightly from the run's own test scores
(Java's PTB tokenizer, all references), which is why the report only sets them beside each other.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from captioner.scoring.cider import CiderD
from captioner.scoring.ptb_tokenizer import simple_ptb_tokenize

_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Agreement:
    """Per image (in `image_ids` order), averaged over the rotations."""

    cider: np.ndarray
    colours_named: np.ndarray  # distinct colour words in the caption
    colours_right: np.ndarray  # ... of which a reference also names
    right_colour: np.ndarray  # 1 when at least one named colour is right (recall's numerator)


@dataclass(frozen=True)
class LeaveOneOut:
    image_ids: tuple[str, ...]  # images with at least two references, in every run's captions
    human: Agreement
    models: dict[Hashable, Agreement]  # per run


class NoHumanBaseline(ValueError):
    """A test set has no human baseline: no image with two references (IAPR TC-12 gives one per
    image, as does `dataset.captions_per_image=1`), so no reference can be held out against another."""


def _colours(text: str, colours: frozenset[str]) -> set[str]:
    return set(_WORD.findall(text.lower())) & colours


def colour_agreement(caption: str, references: Sequence[str], colours: frozenset[str]) -> tuple[int, int]:
    """(colour words the caption names, how many of them some reference names)."""
    named = _colours(caption, colours)
    said = set().union(*(_colours(r, colours) for r in references)) if references else set()
    return len(named), len(named & said)


def leave_one_out(references: Mapping[str, Sequence[str]], captions: Mapping[Hashable, Mapping[str, str]],
                  colours: frozenset[str]) -> LeaveOneOut:
    """Humans and every run (`captions`: run key -> image -> caption) scored on one test set."""
    images = tuple(sorted(i for i, refs in references.items() if len(refs) >= 2
                          and all(i in run for run in captions.values())))
    if not images:
        raise NoHumanBaseline("no test image has two references (and a caption from every run)")
    tokens = {i: [simple_ptb_tokenize(r) for r in references[i]] for i in images}
    sides: dict[Hashable, dict[str, np.ndarray]] = {
        side: {name: np.zeros(len(images)) for name in ("cider", "named", "right", "hit")}
        for side in (None, *captions)}  # None: the held-out human
    caption_tokens = {side: {i: simple_ptb_tokenize(run[i]) for i in images}
                      for side, run in captions.items()}
    rotations = np.zeros(len(images))
    for held_out in range(max(len(tokens[i]) for i in images)):
        rows = [row for row, i in enumerate(images) if len(tokens[i]) > held_out]
        # Document frequencies over every image, those without a reference k with all of theirs:
        # over the few images with a 6th or 7th reference (COCO), CIDEr-D's idf meant little, and
        # over one image it is log(1) = 0 and every score 0.
        others = {i: [t for k, t in enumerate(tokens[i]) if k != held_out] for i in images}
        scorer = CiderD(others)
        keys = [images[row] for row in rows]
        rotations[rows] += 1
        for side in sides:
            if side is None:
                texts = [references[i][held_out] for i in keys]
                tokenized = [tokens[i][held_out] for i in keys]
            else:
                texts = [captions[side][i] for i in keys]
                tokenized = [caption_tokens[side][i] for i in keys]
            sides[side]["cider"][rows] += scorer.score(tokenized, keys)
            for row, image, text in zip(rows, keys, texts, strict=True):
                rest = [r for k, r in enumerate(references[image]) if k != held_out]
                named, right = colour_agreement(text, rest, colours)
                sides[side]["named"][row] += named
                sides[side]["right"][row] += right
                sides[side]["hit"][row] += right > 0

    def averaged(values: dict[str, np.ndarray]) -> Agreement:
        return Agreement(*(values[name] / rotations for name in ("cider", "named", "right", "hit")))

    return LeaveOneOut(images, averaged(sides[None]), {key: averaged(sides[key]) for key in captions})
