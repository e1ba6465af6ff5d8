"""Does a failed run end promptly on this machine, leaving nothing behind? (issue #25, item 2)

    python benchmarks/failure_exit.py [overrides ...]

Runs `python train.py` on a fresh data directory with a learning rate that makes the loss
non-finite within a few steps (model.lr=1e30) and loader workers (data.num_workers=2), and
prints a table: the exit status, the seconds from the error's line to the process's end (the
tests want <= 10), and any process (a loader worker, the features writer, METEOR's Java) still
alive 5 s later, found by a marker in its environment. On the GPU machine a failed run once
lived on after its error; this is the check to run there. The run's output is echoed as it comes,
and the table's rows as they are known (the command first, the error's time when it shows); a
run still alive 15 s after its error is reported with each process's threads and what they wait
in, then killed, so the table comes back either way.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from table import StreamedTable, machine_row  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parent.parent
ERROR = "NonFiniteLossError"
HANG_S = 15  # a run still alive this long after its error has hung (the tests want <= 10 s; gpu.sh: 60 s)
TOTAL_S = 540  # the whole run, extraction included


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


def threads_of(entry: str) -> str:
    """'pid: thread names (their wait channels)' of a 'pid command' from `processes_marked`."""
    pid = entry.split()[0]
    names = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            names.append(f"{(task / 'comm').read_text().strip()} ({(task / 'wchan').read_text().strip()})")
        except OSError:
            continue
    return f"{pid}: {', '.join(names)}"


def main(overrides: list[str]) -> None:
    marker = uuid.uuid4().hex
    command = [sys.executable, str(REPO / "train.py"), "model.lr=1e30", "data.num_workers=2", *overrides]
    # Rows as they are known: a stage killed at its time limit keeps them (gpu.sh keeps `|` lines).
    rows = StreamedTable()
    rows.append(machine_row())
    rows.append(("command", " ".join(["python train.py", *command[2:]])))
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        process = subprocess.Popen([*command, f"data_root={scratch}/data"], cwd=scratch, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env={**os.environ, "WANDB_MODE": "offline", "CAPTIONER_MARK": marker})
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:  # a child that keeps the pipe open must not block this script
            for line in process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        seen, tail, deadline = None, [], time.monotonic() + TOTAL_S
        while time.monotonic() < deadline and not (seen and time.monotonic() - seen > HANG_S):
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                line = ""
            if line is None or (not line and process.poll() is not None):
                break  # the output ended, or the process did (a worker may still hold the pipe)
            print(line, end="", flush=True)  # as it comes: a stage killed at its limit keeps it
            tail = [*tail[-20:], line]
            if seen is None and ERROR in line:
                seen = time.monotonic()
                rows.append(("error seen", f"{seen - began:.1f} s after the start"))
        ended = time.monotonic()
        try:  # the pipe closes a moment before the process can be reaped
            status = process.wait(timeout=5 if seen is None or time.monotonic() - seen <= HANG_S else 0.1)
        except subprocess.TimeoutExpired:
            status = None
        hung = []
        if status is None:  # still running after its error: what it waits in, then end it all
            marked = processes_marked(marker)
            hung = [threads_of(entry) for entry in marked]
            for entry in marked:
                with contextlib.suppress(OSError):
                    os.kill(int(entry.split()[0]), signal.SIGKILL)
            process.wait()
        else:
            time.sleep(5)
        left = processes_marked(marker)
    exited = (f"{status} (1 expected: a failed run)" if status is not None
              else f"still running {HANG_S} s after its error: killed" if seen
              else f"still running after {TOTAL_S} s, no error seen: killed")
    for row in [("exit status", exited),
                ("error to exit", f"no {ERROR} in the output" if not seen
                 else f"{ended - seen:.1f} s" if status is not None else "no exit"),
                ("processes left 5 s later", "; ".join(left) or "none"),
                *[("hung: process, its threads (wait channel)", threads) for threads in hung]]:
        rows.append(row)
    if seen is None or left or status != 1:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
