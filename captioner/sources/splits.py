"""Seeded random train/val/test assignment, for datasets that ship no official split."""

from __future__ import annotations

import random
from collections.abc import Mapping

from captioner.errors import ConfigError


def random_splits(count: int, fractions: Mapping[str, float], seed: int) -> list[str]:
    """The split of each of `count` items: a seeded shuffle cut by `fractions` (train gets the rest)."""
    unknown = set(fractions) - {"train", "val", "test"}
    if unknown or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ConfigError("dataset.split_fractions must give train/val/test summing to 1, "
                         f"got {dict(fractions)}")
    order = list(range(count))
    random.Random(seed).shuffle(order)
    n_val = round(count * fractions.get("val", 0.0))
    n_test = round(count * fractions.get("test", 0.0))
    split_of = ["train"] * count
    for rank, index in enumerate(order):
        if rank < n_val:
            split_of[index] = "val"
        elif rank < n_val + n_test:
            split_of[index] = "test"
    return split_of
