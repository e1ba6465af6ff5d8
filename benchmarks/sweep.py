"""Time the smoke sweep (2 CNNs x 2 RNNs on the built-in data) one run at a time and in parallel.

    python benchmarks/sweep.py [extra overrides ...]

Each launcher starts from an empty data directory, so both include extracting the two features
files (once each: the runs of a CNN share its file). Prints a table of wall times and the
report's test CIDEr-D per run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from table import machine_row, print_table  # benchmarks/ is on sys.path when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from captioner.records.sweep_runs import collect_runs  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def time_sweep(launcher: str, overrides: list[str]) -> tuple[float, list[str]]:
    with tempfile.TemporaryDirectory() as scratch:
        began = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(REPO / "train.py"), "-m", "--config-dir", str(REPO / "sweeps"),
             "--config-name", "smoke", f"hydra/launcher={launcher}", f"data_root={scratch}/data",
             "trainer.enable_progress_bar=false", *overrides],
            cwd=scratch, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"})
        wall = time.perf_counter() - began
        if result.returncode != 0:
            sys.exit(f"the {launcher} sweep failed:\n{result.stderr[-4000:]}")
        (sweep,) = Path(scratch, "outputs", "smoke").iterdir()
        runs = collect_runs(sweep)
        return wall, [f"{r.label(['cnn', 'rnn'])}: {r.test['cider']:.3f}" for r in runs]


def main(overrides: list[str]) -> None:
    rows = [machine_row()]
    for launcher in ("basic", "parallel"):
        wall, ciders = time_sweep(launcher, overrides)
        rows.append((f"{launcher}: wall time, 4 runs", f"{wall:.0f} s"))
        rows.append((f"{launcher}: test CIDEr-D", "; ".join(ciders)))
    print_table(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
