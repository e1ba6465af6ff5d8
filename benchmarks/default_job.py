"""Time the default job as a newcomer runs it: `python train.py` on a fresh data directory.

    python benchmarks/default_job.py [extra overrides ...]

Prints a table: wall time split into feature extraction and training, peak memory, test scores.
The target (issue #19): under 4 minutes on a 2-core CPU with test CIDEr-D >= 4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from table import (  # benchmarks/ is on sys.path when run as a script
    last_extraction_rate,
    machine_row,
    peak_child_rss_mib,
    print_table,
)

REPO = Path(__file__).resolve().parent.parent


def run_default_job(overrides: list[str]) -> tuple[float, dict, str]:
    """Wall seconds, metrics.json and output of `python train.py` on a fresh data directory."""
    with tempfile.TemporaryDirectory() as scratch:
        began = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(REPO / "train.py"), f"data_root={scratch}/data", *overrides],
            cwd=scratch, capture_output=True, text=True,
            env={**os.environ, "WANDB_MODE": "offline"})
        wall = time.perf_counter() - began
        if result.returncode != 0:
            sys.exit(f"train.py failed:\n{result.stderr[-4000:]}")
        (metrics_path,) = Path(scratch, "outputs").glob("**/metrics.json")
        return wall, json.loads(metrics_path.read_text()), result.stderr + result.stdout


def main(overrides: list[str]) -> None:
    wall, metrics, output = run_default_job(overrides)
    peak_mib = peak_child_rss_mib()
    rows = [
        machine_row(),
        ("command", "python train.py " + " ".join(overrides)),
        ("wall time", f"{wall:.0f} s"),
        ("training (fit)", f"{metrics['train_time_s']:.0f} s for {metrics['epochs']} epochs"),
        ("extraction rate", last_extraction_rate(output)),
        ("peak RSS", f"{peak_mib:.0f} MiB"),
        *((f"test {k}", f"{v:.3f}") for k, v in metrics["test"].items()),
    ]
    print_table(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
