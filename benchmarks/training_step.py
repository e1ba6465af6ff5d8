"""Captions per second of the bare training step, of the Lightning fit loop, and of the loader.

    python benchmarks/training_step.py                       # every row, cpu or cuda (auto)
    python benchmarks/training_step.py --rnn lstm --modes eager --precisions fp32 --steps 4
    python benchmarks/training_step.py --device cuda --steps 50 --warmup 10 --lightning-steps 200

The step of the GPU speed targets: `CaptionDecoder` with embed 256, hidden 512, attention 512; batch 64 of
64 regions x 2048 channels; vocabulary 5,000; 22 tokens (<start>, 20 words, <end>: every caption
full length, so no position is padding); forward + backward + Adam; the losses of
`CaptionModule.training_step` (masked cross-entropy + doubly stochastic attention penalty).
FLOPs are counted analytically (matrix products only), so GFLOP/s compares with the machine's peak.
Rows: eager and torch.compile (reduce-overhead = CUDA graphs, on CUDA only), fp32 and bf16
autocast, GRU and LSTM; the same step through `Trainer.fit` (what `python train.py` runs); and
the training loader alone, in memory, streamed from HDF5, and resident on the device.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from table import StreamedTable, machine_row  # noqa: E402  (benchmarks/ is on sys.path)

from captioner.model import CaptionDecoder  # noqa: E402
from captioner.model.compiled import CompiledForward, compiled_graphs, gradients_match  # noqa: E402
from captioner.model.losses import doubly_stochastic_penalty, masked_caption_loss  # noqa: E402

SETTINGS = {"batch": 64, "regions": 64, "channels": 2048, "vocab": 5000, "tokens": 22,
            "embed": 256, "hidden": 512, "attention": 512}
FIT_CLIP = 5.0  # trainer.gradient_clip_val of `python train.py`: Trainer.fit clips, the bare step does not
FIT_DIFFERS = (f"the bare step: fused Adam on CUDA (loop on a CPU), no clipping; Trainer.fit: Lightning "
               f"clips gradients at {FIT_CLIP} and Adam is train.py's (model.adam=auto: fused for fp32, "
               f"foreach for bf16-mixed with clipping, on CUDA)")


def step_flops(cell: str, batch: int, regions: int, channels: int, vocab: int, tokens: int,
               embed: int, hidden: int, attention: int) -> float:
    """Matrix-product FLOPs of one training step (forward + backward), counted by hand.

    Backward costs twice the forward for every product whose input needs a gradient, once for the
    region projection (the features need none). Matches torch.utils.flop_counter to <1%.
    """
    steps, rows = tokens - 1, batch * (tokens - 1)
    gates = (4 if cell == "lstm" else 3) * hidden
    project = 2 * batch * regions * channels * embed                    # features -> regions
    once = (2 * batch * regions * embed * attention                      # attention keys
            + 2 * batch * embed * hidden * (2 if cell == "lstm" else 1)  # initial state
            + 2 * rows * embed * gates)                                  # word gates, all steps
    per_step = (2 * batch * hidden * (gates + attention)                 # hidden gates + query
                + 2 * batch * regions * attention                        # scores
                + 2 * batch * regions * embed                            # context
                + 2 * batch * embed * gates)                             # context gates
    output = 2 * rows * hidden * hidden + 2 * rows * hidden * vocab      # hidden layer, vocabulary
    return 2 * project + 3 * (once + steps * per_step + output)


def cpu_peak_gflops() -> tuple[float, str]:
    """fp32 peak from lscpu: cores x clock x 32 FLOP/cycle (two 8-wide FMA pipes, AVX2)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return float("nan"), "lscpu unavailable"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    mhz = float(fields.get("CPU max MHz") or fields.get("CPU MHz") or 0)
    if not mhz:
        with open("/proc/cpuinfo") as f:
            mhz = next(float(line.split(":")[1]) for line in f if line.startswith("cpu MHz"))
    cores = torch.get_num_threads()
    flops_per_cycle = 32 if "avx2" in fields.get("Flags", "") and "fma" in fields.get("Flags", "") else 16
    return cores * mhz * 1e-3 * flops_per_cycle, f"{cores} cores x {mhz:.0f} MHz x {flops_per_cycle}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_inputs(device: torch.device, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    s = SETTINGS
    features = torch.rand(batch, s["regions"], s["channels"], generator=generator)
    tokens = torch.randint(4, s["vocab"], (batch, s["tokens"]), generator=generator)
    tokens[:, 0], tokens[:, -1] = 1, 2  # <start> ... <end>
    return features.to(device), tokens.to(device)


def bare_step(cell: str, mode: str, precision: str, device: torch.device, steps: int, warmup: int,
              batch: int) -> dict[str, float]:
    """Time `steps` training steps after `warmup` (compilation happens in the warm-up)."""
    torch.manual_seed(0)
    s = SETTINGS
    decoder = CaptionDecoder(s["vocab"], s["channels"], s["embed"], s["hidden"], s["attention"],
                             cell).to(device)
    fused = device.type == "cuda"
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-3, fused=fused)
    forward = decoder if mode == "eager" else CompiledForward(
        decoder, None if mode == "compile" else mode)
    features, tokens = step_inputs(device, batch)
    targets = tokens[:, 1:]
    step_mask = (targets != 0).float()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits, attention = forward(features, tokens)
            loss = masked_caption_loss(logits.float(), targets) + doubly_stochastic_penalty(
                attention.float(), step_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    graphs_before = compiled_graphs()
    began = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warm = time.perf_counter() - began
    graphs_warm = compiled_graphs()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - began) / steps
    return {"captions_s": batch / seconds, "ms": 1e3 * seconds, "warmup_s": warm,
            "graphs": graphs_warm - graphs_before, "recompiles_timed": compiled_graphs() - graphs_warm}


def compiled_matches_eager(cell: str, device: torch.device, mode: str | None) -> str:
    """Loss and gradients of the compiled pass against eager on `device` (dropout off), at the
    benchmark's sizes: the device-side twin of tests/test_fast_step.py."""
    torch.manual_seed(0)
    s = SETTINGS
    decoder = CaptionDecoder(s["vocab"], s["channels"], s["embed"], s["hidden"], s["attention"], cell,
                             dropout=0.0).to(device)
    features, tokens = step_inputs(device, 16)
    tokens[8:, 12:] = 0  # padded rows too
    targets = tokens[:, 1:]

    def loss_and_grads(forward) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits, attention = forward(features, tokens)
        loss = masked_caption_loss(logits, targets) + doubly_stochastic_penalty(
            attention, (targets != 0).float())
        grads = torch.autograd.grad(loss, list(decoder.parameters()))
        return loss.detach().clone(), [g.clone() for g in grads]

    eager_loss, eager_grads = loss_and_grads(decoder)
    compiled = CompiledForward(decoder, mode)
    for _ in range(3):  # the third call replays the CUDA graph
        loss, grads = loss_and_grads(compiled)
    same, worst = gradients_match(grads, eager_grads)  # with an absolute floor for true zeros
    ok = abs(loss.item() - eager_loss.item()) <= 1e-3 * abs(eager_loss.item()) and same
    return (f"{'ok' if ok else 'MISMATCH'}: loss {loss.item():.6f} vs eager {eager_loss.item():.6f}, "
            f"worst gradient difference {worst:.1e} of its largest entry")


# --- the same step through Lightning, and the loader alone, on a features file made here ---

def write_features_file(path: Path, images: int, seed: int = 0) -> None:
    """A real features file: `images` x 64 x 2048 float16, five 20-word captions each, from a
    vocabulary of 4,996 words (with the 4 specials: 5,000), all split into train but a few."""
    from captioner.features.feature_file import FeatureFileWriter
    from captioner.sources import ImageRecord

    s = SETTINGS
    rng = np.random.default_rng(seed)
    words = np.asarray([f"w{i}" for i in range(s["vocab"] - 4)])
    length = s["tokens"] - 2
    # Words drawn as a stream of shuffled passes over the vocabulary, so every word is used.
    passes = -(-images * 5 * length // len(words))
    stream = np.concatenate([rng.permutation(words) for _ in range(passes)])
    records = []
    for i in range(images):
        split = "train" if i >= 4 else ("val" if i < 2 else "test")
        captions = [" ".join(stream[(5 * i + j) * length:(5 * i + j + 1) * length]) for j in range(5)]
        records.append(ImageRecord(f"img{i}", Path(f"img{i}.jpg"), captions, split))
    writer = FeatureFileWriter(path, records, s["regions"], s["channels"], {"dataset": "bench"})
    for start in range(0, images, 256):
        count = min(256, images - start)
        writer.write(start, rng.random((count, s["regions"], s["channels"]), dtype=np.float32))
    writer.finish(grid=[8, 8])


def fit_adam(device: torch.device, precision: str) -> str:
    """The Adam implementation CaptionModule picks for a Trainer.fit row (model.adam=auto)."""
    from captioner.training.adam_implementation import adam_implementation

    return adam_implementation("auto", device.type, "bf16-mixed" if precision == "bf16" else "32-true",
                               FIT_CLIP)


def lightning_fit(path: Path, cell: str, precision: str, device: torch.device, steps: int,
                  warmup: int, compile_setting: str, profiler: Any = None,
                  callbacks: Sequence[Any] = ()) -> dict[str, float]:
    """`Trainer.fit` of CaptionModule over the file, timed from batch `warmup` to the end
    (`profiler`, `callbacks`: Lightning's, for benchmarks/fit_overhead.py)."""
    import pytorch_lightning as pl

    from captioner.data.datamodule import CaptionDataModule
    from captioner.training.module import CaptionModule

    s = SETTINGS
    compiled = compile_setting == "true" or (compile_setting == "auto" and device.type == "cuda")
    datamodule = CaptionDataModule(path, batch_size=s["batch"], max_caption_length=s["tokens"] - 2,
                                   static_caption_length=s["tokens"] if compiled else None,
                                   resident_device=str(device) if device.type == "cuda" else None)
    datamodule.setup()
    module = CaptionModule(datamodule.vocabulary.words, s["channels"], cell, s["embed"], s["hidden"],
                           s["attention"], compile=compiled)

    class Clock(pl.Callback):
        began = ended = 0.0

        def on_train_batch_start(self, trainer, *args) -> None:
            if trainer.global_step == warmup:
                synchronize(device)
                self.began = time.perf_counter()

        def on_train_epoch_end(self, trainer, *args) -> None:
            synchronize(device)
            self.ended = time.perf_counter()

    clock = Clock()
    trainer = pl.Trainer(accelerator=device.type, devices=1, max_epochs=1,
                         limit_train_batches=warmup + steps, limit_val_batches=0, num_sanity_val_steps=0,
                         logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=FIT_CLIP,
                         precision="bf16-mixed" if precision == "bf16" else "32-true",
                         callbacks=[clock, *callbacks], profiler=profiler)
    trainer.fit(module, datamodule=datamodule)
    seconds = (clock.ended - clock.began) / steps
    return {"captions_s": s["batch"] / seconds, "ms": 1e3 * seconds}


def loader_alone(path: Path, placement: str, device: torch.device, batches: int,
                 seconds: float = 10.0) -> float:
    """Captions/s the training loader delivers onto `device` (no model), over `batches` batches
    or `seconds`, whichever ends first."""
    from captioner.data.datamodule import CaptionDataModule

    datamodule = CaptionDataModule(path, batch_size=SETTINGS["batch"], in_memory=placement == "in memory",
                                   max_caption_length=SETTINGS["tokens"] - 2,
                                   resident_device=str(device) if placement == "resident" else None)
    datamodule.setup()
    loader = datamodule.train_dataloader()
    began, seen = time.perf_counter(), 0
    while seen < batches and time.perf_counter() - began < seconds:
        for batch in loader:
            batch["features"].to(device, non_blocking=True)
            seen += 1
            if seen == batches or time.perf_counter() - began > seconds:
                break
    synchronize(device)
    return seen * SETTINGS["batch"] / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--rnn", default="gru,lstm")
    parser.add_argument("--precisions", default="auto", help="fp32,bf16 (auto: both on cuda, fp32 on "
                        "cpu: bf16 without bf16 arithmetic units measured 15x slower there)")
    parser.add_argument("--modes", default="auto", help="eager,compile,reduce-overhead (auto: "
                        "all three on cuda; on cpu eager, and compile for fp32)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (compiles here)")
    parser.add_argument("--batch", type=int, default=SETTINGS["batch"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--lightning-steps", type=int, default=4, help="0 skips the Trainer.fit row")
    parser.add_argument("--loader-batches", type=int, default=30, help="0 skips the loader rows")
    parser.add_argument("--check", action="store_true", help="first compare the compiled pass's loss "
                        "and gradients with eager's on the device (a row per cell)")
    args = parser.parse_args()

    device = torch.device(args.device if args.device != "auto" else
                          "cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high")  # what train.py sets (TF32 on CUDA)
    precisions = (("fp32,bf16" if device.type == "cuda" else "fp32") if args.precisions == "auto"
                  else args.precisions).split(",")
    modes = (["eager", "compile", "reduce-overhead"] if device.type == "cuda" else ["eager", "compile"]
             ) if args.modes == "auto" else args.modes.split(",")
    peak, peak_how = (cpu_peak_gflops() if device.type == "cpu" else (float("nan"), "see the GPU's sheet"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else machine_row()[1]
    rows = StreamedTable()  # a stage cut off at its time limit keeps what it measured
    for row in [("machine", name), ("torch", f"{torch.__version__}, {torch.get_num_threads()} threads"),
                ("settings", ", ".join(f"{k} {v}" for k, v in SETTINGS.items()) + f"; batch {args.batch}"),
                ("command", "python benchmarks/training_step.py " + " ".join(sys.argv[1:]))]:
        rows.append(row)
    if device.type == "cpu":
        rows.append(("fp32 peak (lscpu)", f"{peak:.0f} GFLOP/s = {peak_how}"))
    cells = args.rnn.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "bench.h5"
        if args.lightning_steps or args.loader_batches:  # first: the Trainer.fit rows read it
            batches = max(args.lightning_steps + args.warmup + 2, args.loader_batches + 2)
            write_features_file(path, batches * SETTINGS["batch"] // 5 + 5)
        if args.lightning_steps:
            rows.append(("bare step against Trainer.fit", FIT_DIFFERS))
        # The rows that decide the targets first (a stage cut off at its limit loses the last ones):
        # each precision's bare steps, then its Trainer.fit (compiled before eager); the check of
        # compiled = eager after the first precision; the loader alone last.
        for index, precision in enumerate(precisions):
            for cell in cells:
                flops = step_flops(cell, **{**SETTINGS, "batch": args.batch})
                if index == 0:
                    rows.append((f"{cell} FLOPs per step", f"{flops / 1e9:.1f} GFLOP"))
                for mode in modes:
                    r = bare_step(cell, mode, precision, device, args.steps, args.warmup, args.batch)
                    rate = flops * r["captions_s"] / args.batch / 1e9
                    share = f", {100 * rate / peak:.0f}% of peak" if peak == peak else ""
                    compiled = (f"; {r['graphs']} graph(s) in warm-up {r['warmup_s']:.0f} s, "
                                f"{r['recompiles_timed']} while timed") if mode != "eager" else ""
                    rows.append((f"step {cell} {precision} {mode}",
                                 f"{r['captions_s']:,.0f} captions/s ({r['ms']:.0f} ms/step, "
                                 f"{rate:.0f} GFLOP/s{share}){compiled}"))
                for setting in (["auto", "false"] if device.type == "cuda" else ["false"]
                                ) if args.lightning_steps else []:
                    r = lightning_fit(path, cell, precision, device, args.lightning_steps,
                                      max(args.warmup, 1), setting)
                    rows.append((f"Trainer.fit {cell} {precision} compile={setting} "
                                 f"(clip {FIT_CLIP}, {fit_adam(device, precision)} Adam)",
                                 f"{r['captions_s']:,.0f} captions/s ({r['ms']:.0f} ms/step)"))
            if args.check and index == 0:
                check_mode = "reduce-overhead" if device.type == "cuda" else None
                for cell in cells:
                    rows.append((f"compiled = eager? {cell} ({check_mode or 'default'})",
                                 compiled_matches_eager(cell, device, check_mode)))
        placements = ["in memory", "HDF5 streaming", "resident"] if args.loader_batches else []
        for placement in placements:
            rate = loader_alone(path, placement, device, args.loader_batches)
            where = f" on {device.type}" if placement == "resident" else ""
            rows.append((f"loader alone, {placement}{where}", f"{rate:,.0f} captions/s"))


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
