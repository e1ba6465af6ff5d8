"""Speed claims from repeated, interleaved timings, not from one timing per run.

A sweep's s/epoch is measured once per run, on whatever else the machine was doing then (in the
committed Flickr8k sweep, every LSTM run ran after every GRU run). A speed claim instead rests on
a timing benchmark (`benchmarks/cell_speed.py`) that times the arms alternately, A B B A A B ...,
so slow drifts of the machine fall on both arms alike, at least 5 times each. Each repeat gives one
paired ratio; their mean with a t-interval is the claim's estimate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from captioner.compare.combined_interval import Estimate

SPEED_FILE = "speed.json"  # in a sweep folder: the report judges the speed claim on it
MIN_REPEATS = 5


def interleaved_order(arms: Sequence[str], repeats: int) -> list[str]:
    """Each arm `repeats` times, alternating which goes first: A B, B A, A B, ..."""
    order: list[str] = []
    for repeat in range(repeats):
        order += list(arms) if repeat % 2 == 0 else list(reversed(arms))
    return order


@dataclass(frozen=True)
class SpeedRecord:
    """What the timing benchmark measured: seconds per timed block for each arm, in run order."""

    seconds: dict[str, list[float]]  # arm -> one timing per repeat
    order: list[str]
    machine: str
    command: str

    @classmethod
    def read(cls, path: Path) -> SpeedRecord:
        try:
            loaded = json.loads(Path(path).read_text())
            record = cls({k: [float(s) for s in v] for k, v in loaded["seconds"].items()},
                         list(loaded["order"]), str(loaded["machine"]), str(loaded["command"]))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a speed record ({error})") from error
        return record

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.__dict__, indent=1) + "\n")

    def relative_time(self, slower: str, faster: str) -> Estimate:
        """slower's time / faster's time - 1, repeat by repeat (positive: `faster` is faster)."""
        pairs = list(zip(self.seconds[slower], self.seconds[faster], strict=False))
        if len(pairs) < MIN_REPEATS:
            raise ValueError(f"a speed claim needs {MIN_REPEATS}+ timings per arm, got {len(pairs)}")
        return Estimate(tuple(s / f - 1 for s, f in pairs), 0.0)
