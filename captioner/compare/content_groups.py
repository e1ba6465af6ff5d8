"""Test images grouped by what they show (people, animals, colours, ...), read from their references.

An image is in a group when most of its references use one of the group's words; a caption names
the group when it uses one of them. The word lists are config (`conf/content_groups.yaml`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

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
        loaded = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read content groups ({error})") from error
    if not isinstance(loaded, dict) or not all(isinstance(w, list) and w for w in loaded.values()):
        raise ValueError(f"{path}: expected `group: [word, ...]` entries, each with at least one word")
    return [ContentGroup(str(name), frozenset(str(w).lower() for w in words))
            for name, words in loaded.items()]


@dataclass(frozen=True)
class GroupScore:
    """One run on one group's test images."""

    images: int
    cider: float | None  # mean CIDEr-D over the group's images (None: no per-image scores)
    recall: float  # share of the group's images whose caption names the group


def group_members(references: dict[str, list[str]], group: ContentGroup) -> set[str]:
    """The test images whose references mostly name the group."""
    return {image for image, texts in references.items() if group.shown_in(texts)}


def group_scores(runs: Sequence[RunResult],
                 groups: Sequence[ContentGroup]) -> dict[str, dict[Path, GroupScore]]:
    """group name -> run folder -> the run's scores on that group's images (completed runs with
    captions only)."""
    scores: dict[str, dict[Path, GroupScore]] = {}
    for group in groups:
        scores[group.name] = {}
        for run in runs:
            if run.status != "completed" or not run.captions:
                continue
            members = group_members(run.references, group)
            if not members:
                continue
            recall = sum(group.named_in(run.captions[i]) for i in members) / len(members)
            cider = None
            if run.per_image is not None:
                keep = np.array([i in members for i in run.per_image.image_ids])
                cider = float(run.per_image.cider[keep].mean())
            scores[group.name][run.path] = GroupScore(len(members), cider, recall)
    return scores
