"""The console's closing lines: test scores and a few captions beside their references."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from captioner.records.run_summary import RunSummary
from captioner.scoring.coco_metrics import SCORE_NAMES


def print_summary(summary: RunSummary, examples: list[dict[str, Any]],
                  console: Console | None = None) -> None:
    console = console or Console()
    config = summary.config
    scores = Table(title=f"test scores: dataset={config['dataset']} cnn={config['cnn']} "
                         f"rnn={config['rnn']}")
    shown = [name for name in SCORE_NAMES if name in summary.test]
    for name in shown:
        scores.add_column(name, justify="right")
    scores.add_row(*(f"{summary.test[name]:.3f}" for name in shown))
    console.print(scores)
    for example in examples:
        console.print(f"[bold]{example['image_id']}[/bold]")
        console.print(f"  generated: {example['caption']}")
        for reference in example["references"][:3]:
            console.print(f"  reference: {reference}", style="dim")
    best = summary.best_val_cider
    console.print(f"epochs: {summary.epochs}  train time: {summary.train_time_s}s  "
                  f"best val CIDEr-D: {'n/a' if best is None else f'{best:.3f}'}")
