"""A sweep folder's `speed.json`: interleaved timings of two arms (benchmarks/cell_speed.py), the
record the report judges a speed claim on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from captioner.paths import write_atomically

SPEED_FILE = "speed.json"  # in a sweep folder
MIN_REPEATS = 5


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
        # atomically: a half-written record (a killed or failed write) would fail the sweep's report
        write_atomically(Path(path), json.dumps(self.__dict__, indent=1) + "\n")

    def relative_times(self, slower: str, faster: str) -> tuple[float, ...]:
        """slower's time / faster's time - 1, repeat by repeat (positive: `faster` is faster)."""
        pairs = list(zip(self.seconds[slower], self.seconds[faster], strict=False))
        if len(pairs) < MIN_REPEATS:
            raise ValueError(f"a speed claim needs {MIN_REPEATS}+ timings per arm, got {len(pairs)}")
        return tuple(s / f - 1 for s, f in pairs)
