"""Speed claims from repeated, interleaved timings, not from one timing per run.

A sweep's s/epoch is measured once per run, on whatever else the machine was doing then (in the
committed Flickr8k sweep, every LSTM run ran after every GRU run). A speed claim instead rests on
a timing benchmark (`benchmarks/cell_speed.py`) that times the arms alternately, A B B A A B ...,
so slow drifts of the machine fall on both arms alike, at least 5 times each. Each repeat gives one
paired ratio; their mean with a t-interval is the claim's estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

from captioner.compare.combined_interval import Estimate
from captioner.records.speed_record import SpeedRecord


def relative_time(record: SpeedRecord, slower: str, faster: str) -> Estimate:
    """slower's time / faster's time - 1 over the repeats, with a t-interval (no images to resample)."""
    return Estimate(record.relative_times(slower, faster), 0.0)


def interleaved_order(arms: Sequence[str], repeats: int) -> list[str]:
    """Each arm `repeats` times, alternating which goes first: A B, B A, A B, ..."""
    order: list[str] = []
    for repeat in range(repeats):
        order += list(arms) if repeat % 2 == 0 else list(reversed(arms))
    return order
