"""The two-column Markdown table every benchmark prints (pasted into docs/benchmarks.md), and
the rows several benchmarks measure the same way."""

from __future__ import annotations

import os
import platform
import re
import resource


def print_table(rows: list[tuple[str, str]]) -> None:
    table = StreamedTable(max(len(key) for key, _ in rows))
    for row in rows:
        table.append(row)


class StreamedTable:
    """The same table, each row printed (and flushed) as it is measured: a benchmark killed at its
    time limit keeps the rows it finished (benchmarks/gpu.sh keeps a stage's `|` lines)."""

    def __init__(self, width: int = 44) -> None:
        self.width = width
        print(f"| {'what':<{width}} | value |\n|{'-' * (width + 2)}|-------|", flush=True)

    def append(self, row: tuple[str, str]) -> None:
        key, value = row
        print(f"| {key:<{self.width}} | {value} |", flush=True)


def machine_row() -> tuple[str, str]:
    return ("machine", f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")


def peak_child_rss_mib() -> float:
    """The largest resident memory of any finished child process (the command benchmarked)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def last_extraction_rate(output: str) -> str:
    """The images/s of extraction's last progress line in a command's output, or n/a."""
    rates = re.findall(r"features \d+/\d+\s+([\d.]+) images/s", output)
    return f"{rates[-1]} images/s" if rates else "n/a"
