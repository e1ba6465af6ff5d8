"""Test images grouped by what they show (people, animals, colours, ...), read from their references.

An image is in a group when most of its references use one of the group's words; a caption names
the group when it uses one of them. The word lists are config (`conf/content_groups.yaml`).

A group's raw CIDEr-D says as much about how well its references agree as about the model, so a
group is measured against the human baseline (`human_baseline.py`): the model's leave-one-out
CIDEr-D over the humans', and how often the model names the group beside how often a held-out
reference does. Colours get precision (the named colour is one a reference names) and recall.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from captioner.compare.effects import RunStatistic, SweepCells
from captioner.compare.human_baseline import Agreement, LeaveOneOut, NoHumanBaseline, leave_one_out
from captioner.records.per_image_scores import TestSet
from captioner.records.sweep_runs import RunResult

DEFAULT_GROUPS = Path(__file__).resolve().parents[1] / "conf" / "content_groups.yaml"  # captioner/conf/
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class ContentGroup:
    name: str
    words: frozenset[str]

    def named_in(self, text: str) -> bool:
        return not self.words.isdisjoint(_WORD.findall(text.lower()))

    def shown_in(self, references: Sequence[str]) -> bool:
        """Most references name the group (3 of 5, as Flickr8k and COCO give 5)."""
        return sum(self.named_in(r) for r in references) * 2 > len(references)


def load_groups(path: Path = DEFAULT_GROUPS) -> list[ContentGroup]:
    """The groups of a YAML file `{group: [word, ...]}`; errors name the file."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read content groups ({error})") from error
    if not isinstance(loaded, dict) or not all(isinstance(w, list) and w for w in loaded.values()):
        raise ValueError(f"{path}: expected `group: [word, ...]` entries, each with at least one word")
    return [ContentGroup(str(name), frozenset(str(w).lower() for w in words))
            for name, words in loaded.items()]


def human_baselines(runs: Sequence[RunResult], colours: ContentGroup | None
                    ) -> tuple[dict[TestSet, LeaveOneOut], dict[TestSet, str]]:
    """Each test set's leave-one-out human baseline, with every completed run on it measured alike;
    and, for each test set that has none (one reference an image), why: the comparisons that need
    it are not testable, the rest of the report stands."""
    by_test_set: dict[TestSet, list[RunResult]] = {}
    for run in runs:
        if run.status == "completed" and run.per_image is not None and run.captions:
            by_test_set.setdefault(run.per_image.test_set, []).append(run)
    words = colours.words if colours is not None else frozenset()
    baselines, missing = {}, {}
    for images, members in by_test_set.items():
        try:
            baselines[images] = leave_one_out(members[0].references, {r.path: r.captions for r in members},
                                              words)
        except NoHumanBaseline as error:
            more = len(members) - 3
            named = ", ".join(r.name for r in members[:3]) + (f" and {more} more" if more > 0 else "")
            missing[images] = (f"the test set of run{'s' if len(members) > 1 else ''} {named} has no human "
                               f"baseline: {error}")
    return baselines, missing


class GroupMeasures:
    """Per-run statistics on a content group's images, for `SweepCells.combine`: each gives the
    value on the test set as it is and on every image resample."""

    def __init__(self, cells: SweepCells):
        self.cells = cells

    def _weighted(self, run: RunResult, group: ContentGroup | None
                  ) -> tuple[LeaveOneOut, Agreement, np.ndarray] | None:
        """The run's baseline, its own leave-one-out values, and the image resamples' weights,
        zero outside `group` (None: every test image)."""
        found = self.cells.baseline_of(run)
        if found is None:
            return None
        baseline, model = found
        weights = self.cells.resampler.weights(baseline.image_ids)
        if group is not None:
            weights = weights * np.array([group.shown_in(run.references[i]) for i in baseline.image_ids],
                                         dtype=np.float64)
        return baseline, model, weights

    def ratio(self, group: ContentGroup) -> RunStatistic:
        """The model's leave-one-out CIDEr-D on the group's images / the humans' (1: as close to the
        references as a person)."""
        def statistic(run: RunResult) -> np.ndarray | None:
            if (found := self._weighted(run, group)) is None:
                return None
            baseline, model, weights = found
            return (weights @ model.cider) / np.maximum(weights @ baseline.human.cider, 1e-12)
        return statistic

    def named(self, group: ContentGroup) -> RunStatistic:
        """The share of the group's images whose caption names the group."""
        def statistic(run: RunResult) -> np.ndarray | None:
            if (found := self._weighted(run, group)) is None:
                return None
            baseline, _, weights = found
            said = np.array([group.named_in(run.captions[i]) for i in baseline.image_ids], dtype=np.float64)
            return (weights @ said) / np.maximum(weights.sum(axis=1), 1e-12)
        return statistic

    def colour_precision(self, human: bool = False, versus_human: bool = False) -> RunStatistic:
        """Of the colours the captions name, the share a reference names too (all test images)."""
        return self._colour(lambda a: (a.colours_right, a.colours_named), None, human, versus_human)

    def colour_recall(self, colours: ContentGroup, human: bool = False, versus_human: bool = False
                      ) -> RunStatistic:
        """Of the colour images, the share whose caption names a colour a reference names."""
        return self._colour(lambda a: (a.right_colour, np.ones_like(a.right_colour)), colours, human,
                            versus_human)

    def _colour(self, parts, group: ContentGroup | None, human: bool, versus_human: bool) -> RunStatistic:
        def statistic(run: RunResult) -> np.ndarray | None:
            if (found := self._weighted(run, group)) is None:
                return None
            baseline, model, weights = found

            def share(agreement: Agreement) -> np.ndarray:
                numerator, denominator = parts(agreement)
                return (weights @ numerator) / np.maximum(weights @ denominator, 1e-12)
            if versus_human:
                return share(model) - share(baseline.human)
            return share(baseline.human if human else model)
        return statistic


def human_share_naming(baseline: LeaveOneOut, references: dict[str, list[str]], group: ContentGroup) -> float:
    """How often a held-out reference names the group, on the group's images."""
    members = [i for i in baseline.image_ids if group.shown_in(references[i])]
    if not members:
        return float("nan")
    return float(np.mean([np.mean([group.named_in(r) for r in references[i]]) for i in members]))
