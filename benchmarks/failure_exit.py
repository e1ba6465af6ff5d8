"""Does a failed run end promptly on this machine, leaving nothing behind? (issue #25, item 2)

    python benchmarks/failure_exit.py [overrides ...]

Runs `python train.py` on a fresh data directory with a learning rate that makes the loss
non-finite within a few steps (model.lr=1e30) and loader workers (data.num_workers=2), and
prints a table: the exit status, the seconds from the error's line to the process's end (the
tests want <= 10), and any process (a loader worker, the features writer, METEOR's Java) still
alive 5 s later, found by a marker in its environment. On the GPU machine a failed run once
lived on after its error; this is the check to run there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from table import machine_row, print_table  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parent.parent
ERROR = "NonFiniteLossError"


def processes_marked(marker: str) -> list[str]:
    """'pid command' of every process whose environment carries `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes():
                command = (entry / "cmdline").read_bytes()[:80].replace(b"\0", b" ").decode()
                found.append(f"{entry.name} {command}")
        except OSError:  # ended meanwhile
            continue
    return found


def main(overrides: list[str]) -> None:
    marker = uuid.uuid4().hex
    command = [sys.executable, str(REPO / "train.py"), "model.lr=1e30", "data.num_workers=2", *overrides]
    with tempfile.TemporaryDirectory() as scratch:
        process = subprocess.Popen([*command, f"data_root={scratch}/data"], cwd=scratch, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env={**os.environ, "WANDB_MODE": "offline", "CAPTIONER_MARK": marker})
        seen, tail = None, []
        for line in process.stdout:  # read to the end: a full pipe would block the process
            tail = [*tail[-20:], line]
            if seen is None and ERROR in line:
                seen = time.monotonic()
        status = process.wait(timeout=600)
        ended = time.monotonic()
        time.sleep(5)
        left = processes_marked(marker)
    rows = [machine_row(), ("command", " ".join(["python train.py", *command[2:]])),
            ("exit status", f"{status} (1 expected: a failed run)"),
            ("error to exit", f"{ended - seen:.1f} s" if seen else f"no {ERROR} in the output"),
            ("processes left 5 s later", "; ".join(left) or "none")]
    print_table(rows)
    if seen is None or left or status != 1:
        print("".join(tail))
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
