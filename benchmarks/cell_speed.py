"""GRU against LSTM training speed: repeated, interleaved timings of the Flickr8k recipe's step.

    python benchmarks/cell_speed.py [--repeats 6] [--steps 30] [--out docs/flickr8k_cnn_rnn/speed.json]

The step is the committed Flickr8k comparison's: `CaptionDecoder` with embed 256, hidden 512,
attention 256; batch 64 of 7x7x1280 regions (MobileNetV2); vocabulary 2,535; 18 tokens; forward,
backward and Adam. The arms are timed alternately (GRU LSTM, LSTM GRU, ...), `--steps` steps per
timing after a warm-up, and the table gives each arm's timings and LSTM's time relative to GRU's
with a 95% interval over the repeats. `--out` writes the record the sweep report judges the
"GRU is faster" claim on. Run it alone: another process on the machine slows both arms unevenly.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from table import machine_row, print_table  # noqa: E402  (benchmarks/ is on sys.path)

from captioner.compare.speed import interleaved_order, relative_time  # noqa: E402
from captioner.model import CaptionDecoder  # noqa: E402
from captioner.model.losses import doubly_stochastic_penalty, masked_caption_loss  # noqa: E402
from captioner.records.speed_record import SpeedRecord  # noqa: E402

RECIPE = {"batch": 64, "regions": 49, "channels": 1280, "vocab": 2535, "tokens": 18,
          "embed": 256, "hidden": 512, "attention": 256}


def timed_step(cell: str):
    """A function that runs `n` training steps of one arm and returns the seconds they took."""
    torch.manual_seed(0)
    s = RECIPE
    decoder = CaptionDecoder(s["vocab"], s["channels"], s["embed"], s["hidden"], s["attention"], cell)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(s["batch"], s["regions"], s["channels"], generator=generator)
    tokens = torch.randint(4, s["vocab"], (s["batch"], s["tokens"]), generator=generator)
    tokens[:, 0], tokens[:, -1] = 1, 2
    targets = tokens[:, 1:]

    def run(n: int) -> float:
        began = time.perf_counter()
        for _ in range(n):
            logits, attention = decoder(features, tokens)
            penalty = doubly_stochastic_penalty(attention, (targets != 0).float())
            loss = masked_caption_loss(logits, targets) + penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - began
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=6, help="timings per arm (at least 5)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per timing")
    parser.add_argument("--out", type=Path, default=None, help="write the speed record here (JSON)")
    args = parser.parse_args()
    arms = {"gru": timed_step("gru"), "lstm": timed_step("lstm")}
    for run in arms.values():
        run(3)  # warm-up: allocator, thread pool
    order = interleaved_order(list(arms), args.repeats)
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    for arm in order:
        seconds[arm].append(arms[arm](args.steps))
    command = "python benchmarks/cell_speed.py " + " ".join(sys.argv[1:])
    record = SpeedRecord(seconds, order, f"{platform.processor() or platform.machine()}, "
                         f"{torch.get_num_threads()} threads, torch {torch.__version__}", command.strip())
    relative = relative_time(record, "lstm", "gru")
    low, high = relative.interval()
    print_table([machine_row(), ("command", record.command), ("order", " ".join(order)),
                 *((f"{arm} s per {args.steps} steps", ", ".join(f"{s:.2f}" for s in values))
                   for arm, values in seconds.items()),
                 ("LSTM time / GRU time - 1", f"{relative.value:+.3f} [{low:+.3f}, {high:+.3f}] (95%, "
                  f"{relative.seeds} repeats)")])
    if args.out:
        record.write(args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
