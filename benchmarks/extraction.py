"""Feature extraction throughput and memory: `python benchmarks/extraction.py [N] [overrides ...]`.

Generates N (default 2000) shapes scenes as 299 px JPEGs in a scratch folder, then times
`python -m captioner.prepare` over them (cnn=inception_v3 at 299 px unless overridden, random
weights) and prints a table: images/s, peak RSS of the extraction process, and the HDF5 file's
size against the seed tutorial's cache (one float32 .npy file per image).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from table import (  # benchmarks/ is on sys.path when run as a script
    last_extraction_rate,
    machine_row,
    peak_child_rss_mib,
    print_table,
)

REPO = Path(__file__).resolve().parent.parent


def main(count: int, overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        common = [f"data_root={scratch}/data", f"dataset.num_images={count}", "dataset.image_size=299",
                  "cnn=inception_v3", "cnn.input_size=299", *overrides]
        prepare = [sys.executable, "-m", "captioner.prepare", *common]
        began = time.perf_counter()
        result = subprocess.run(prepare, cwd=scratch, capture_output=True, text=True)
        wall = time.perf_counter() - began
        if result.returncode != 0:
            sys.exit(f"prepare failed:\n{result.stderr[-4000:]}")
        (features,) = Path(scratch, "data", "features").glob("*.h5")
        h5_bytes = features.stat().st_size
        jpeg_bytes = sum(p.stat().st_size for p in Path(scratch, "data", "shapes", "images").iterdir())
        grid = re.search(r"(\d+) regions x (\d+) channels", result.stdout)
        regions, channels = int(grid.group(1)), int(grid.group(2))
        np.save(Path(scratch, "one.npy"), np.zeros((regions, channels), np.float32))
        npy_bytes = Path(scratch, "one.npy").stat().st_size * count
    peak_mib = peak_child_rss_mib()
    rows = [
        machine_row(),
        ("command", "python -m captioner.prepare " + " ".join(common)),
        ("images", f"{count} JPEGs of 299x299 ({jpeg_bytes / 2**20:.1f} MiB)"),
        ("wall time (generate + extract)", f"{wall:.0f} s"),
        ("extraction rate", last_extraction_rate(result.stderr + result.stdout)),
        ("peak RSS", f"{peak_mib:.0f} MiB"),
        ("features file (float16 HDF5)", f"{h5_bytes / 2**20:.0f} MiB"),
        ("float32 .npy per image (seed tutorial)", f"{npy_bytes / 2**20:.0f} MiB ({count} files)"),
    ]
    print_table(rows)


if __name__ == "__main__":
    args = sys.argv[1:]
    n = int(args.pop(0)) if args and args[0].isdigit() else 2000
    main(n, args)
