"""Where `Trainer.fit` spends a step beyond the bare compiled step, and which calls wait for the GPU
(issue #25, item 4: fit ran at 58% of the compiled step on an H200, and nobody had profiled why).

    python benchmarks/fit_overhead.py                          # cuda if available, else cpu
    python benchmarks/fit_overhead.py --device cpu --steps 3 --warmup 1   # a dry run here

The step of benchmarks/training_step.py (LSTM, batch 64 of 64 x 2048 regions, 22 tokens) through
`Trainer.fit` as `python train.py` runs it (gradient clipping 5.0, the compiled step where
`model.compile=auto` compiles), twice: first plain, timed only (the fit's speed, the row to set
against the bare step), then instrumented, with Lightning's SimpleProfiler: host milliseconds per
step of every hook and loop action that runs once a step, over the timed steps only. On CUDA the timed
steps also run under `torch.cuda.set_sync_debug_mode("warn")`, which warns at every operation that
waits for the GPU: the table counts them per step by the line that called them. On every device
the timed steps' host reads of tensors (`.item()`, `bool()`, ...) are counted by line as well
(captioner/training/host_reads.py): on a CPU they name the syncs a GPU run would make. Host time is
what a launch-bound step is made of, so the largest rows beside the training step itself are the cost.
The instrumented fit is slower than the plain one (the read counter sends every torch call outside
the compiled graph through Python): its own time is shown only to size what the rows describe.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.profilers import SimpleProfiler
from table import StreamedTable  # benchmarks/ is on sys.path when run as a script
from training_step import FIT_CLIP, SETTINGS, fit_adam, lightning_fit, write_features_file

from captioner.training.host_reads import CountHostReadsPerStep, HostReads, shown_path

REPO = Path(__file__).resolve().parent.parent
# The text of the warning torch.cuda.set_sync_debug_mode("warn") gives (c10/cuda/CUDAFunctions.cpp).
SYNC_WARNING = "called a synchronizing CUDA operation"


def per_step_host_ms(recorded: Mapping[str, Sequence[float]], steps: int) -> list[tuple[str, float]]:
    """(action, mean ms) over the last `steps` records of each action recorded at least `steps`
    times (once a step or more: the per-step actions; setup and per-epoch hooks drop out),
    largest first. `recorded`: SimpleProfiler.recorded_durations (seconds)."""
    rows = [(action, 1e3 * sum(times[-steps:]) / steps)
            for action, times in recorded.items() if len(times) >= steps]
    return sorted(rows, key=lambda row: -row[1])


def optimizer_update_ms(profile: Mapping[str, float]) -> float:
    """The optimizer step's host time less the closure it runs first (training step, zero_grad,
    backward, clipping): Adam's update and the hooks around it, outside any compiled graph."""
    closure = ("Strategy.training_step", ".optimizer_zero_grad", "Strategy.backward",
               ".configure_gradient_clipping")
    inside = [name for name in profile if name.endswith(closure)]
    # The module's hook only: were the strategy's step profiled too, it would nest the same time.
    step = sum(ms for name, ms in profile.items()
               if name.startswith("[LightningModule]") and name.endswith(".optimizer_step"))
    return step - sum(profile[name] for name in inside)


def sync_sites(caught: Iterable[warnings.WarningMessage], root: Path = REPO) -> Counter[str]:
    """How many synchronizing calls each source line made: `file:line` of the Python frame that
    called the op (relative to the checkout, or to site-packages for a library)."""
    return Counter(f"{shown_path(warning.filename, root)}:{warning.lineno}" for warning in caught
                   if SYNC_WARNING in str(warning.message))


class SyncDebugWindow(pl.Callback):
    """Sync debug warnings on from step `first` (after the warm-up's compiling) to the epoch's end."""

    def __init__(self, first: int):
        self.first = first

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.first and torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_epoch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--rnn", default="lstm")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16")
    parser.add_argument("--compile", default="auto", help="model.compile: auto, true or false")
    parser.add_argument("--steps", type=int, default=100, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compiles here)")
    parser.add_argument("--top", type=int, default=12, help="profiler rows shown")
    args = parser.parse_args(argv)

    device = torch.device(args.device if args.device != "auto" else
                          "cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision("high")  # what train.py sets (TF32 on CUDA)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = StreamedTable()  # each row as measured: a stage cut off at its limit keeps the plain fit's
    rows.append(("device", f"{name}, torch {torch.__version__}"))
    rows.append(("command", "python benchmarks/fit_overhead.py "
                 + " ".join(sys.argv[1:] if argv is None else argv)))
    what = (f"{args.rnn} {args.precision} compile={args.compile} "
            f"(clip {FIT_CLIP}, {fit_adam(device, args.precision)} Adam)")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bench.h5"
        write_features_file(path, (args.steps + args.warmup + 2) * SETTINGS["batch"] // 5 + 5)
        # The fit's speed: no profiler, no counter, no sync debug mode (the counter sends every torch
        # call outside the compiled graph through Python, so the fit below is slower than this one).
        plain = lightning_fit(path, args.rnn, args.precision, device, args.steps, args.warmup, args.compile)
        rows.append(("Trainer.fit step, plain: no profiler, no read counter (its speed)",
                     f"{plain['ms']:.2f} ms ({plain['captions_s']:,.0f} captions/s), {what}"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # every synchronizing call, not the first per line
            # Its own report goes to a file: its rows would read as this table's.
            profiler = SimpleProfiler(dirpath=scratch, filename="profile")
            reads = HostReads()
            with reads:
                fit = lightning_fit(path, args.rnn, args.precision, device, args.steps, args.warmup,
                                    args.compile, profiler=profiler,
                                    callbacks=[CountHostReadsPerStep(reads), SyncDebugWindow(args.warmup)])
    rows.append(("Trainer.fit step, instrumented: profiler, read counter, sync debug (slower)",
                 f"{fit['ms']:.2f} ms ({fit['captions_s']:,.0f} captions/s): the fit profiled below"))
    profile = per_step_host_ms(profiler.recorded_durations, args.steps)
    for action, ms in profile[:args.top]:
        rows.append((f"host ms/step: {action}", f"{ms:.3f}"))
    rows.append(("host ms/step: the optimizer's own update (step less its closure)",
                 f"{optimizer_update_ms(dict(profile)):.3f}"))
    timed = range(args.warmup, args.warmup + args.steps)
    read_sites = reads.total(timed)
    rows.append(("host reads of tensors per step", f"{sum(read_sites.values()) / args.steps:.2f}"))
    for site, count in read_sites.most_common(8):
        rows.append((f"read at {site}", f"{count / args.steps:.2f} per step"))
    if device.type == "cuda":
        sites = sync_sites(caught)
        rows.append(("synchronizing calls per step", f"{sum(sites.values()) / args.steps:.2f}"))
        for site, count in sites.most_common(8):
            rows.append((f"sync at {site}", f"{count / args.steps:.2f} per step"))
    else:
        rows.append(("synchronizing calls per step", "n/a (CUDA only)"))


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
