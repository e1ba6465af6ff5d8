"""How long the report's paired bootstrap takes: 1,000 resamples of 1,000 test images, 4 runs.

    python benchmarks/bootstrap.py
"""

from __future__ import annotations

import time

import numpy as np
from table import machine_row, print_table  # benchmarks/ is on sys.path when run as a script

from captioner.compare.bootstrap import RunScores, contrast


def main() -> None:
    rng = np.random.default_rng(0)
    runs = [RunScores(tuple(map(str, range(1000))), rng.random(1000), rng.integers(1, 9, (1000, 10)) * 1.0)
            for _ in range(4)]
    rows = [machine_row()]
    for metric in ("cider", "bleu4"):
        began = time.perf_counter()
        contrast(runs[:2], runs[2:], metric, resamples=1000)
        rows.append((f"{metric}: 1,000 resamples x 1,000 images x 4 runs",
                     f"{time.perf_counter() - began:.2f} s"))
    print_table(rows)


if __name__ == "__main__":
    main()
