"""`python -m captioner.caption CHECKPOINT IMAGE_OR_FOLDER ...`: caption your own images.

The checkpoint says which CNN made its training features (name, weights, input size,
normalisation, scale); the same encoder is rebuilt here, so a new image gets exactly the features
training would have given it. `--attention out.png` draws one panel per generated word.

One bad file among good ones (not an image, empty, a decompression bomb) does not stop the
others: every readable image is captioned, each bad one is reported on its own line on stderr,
and the exit status is 1 at the end (2: nothing could be done, e.g. a missing checkpoint).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from captioner.attention_figure import plot_attention
from captioner.backbones import build_backbone
from captioner.checkpoint_io import CheckpointError, load_module
from captioner.decode_options import add_decode_arguments, decode_overrides
from captioner.encoders import ImageFiles, ImageReadError, calibrate_on_images
from captioner.module import CaptionModule

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
RANDOM = re.compile(r"random\(seed=(\d+),calibration_images=(\d+)\)")


def image_files(inputs: list[Path]) -> list[Path]:
    """The given files, and the images inside given folders (sorted)."""
    found = []
    for path in inputs:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image file or folder")
    if not found:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise FileNotFoundError(f"no images ({suffixes}) in {', '.join(map(str, inputs))}")
    return found


def cnn_config(encoder: dict[str, Any], weights_path: Path | None = None) -> Any:
    """The `cnn` config that made the checkpoint's features, from its `encoder` record."""
    weights = str(encoder.get("weights", ""))
    cnn: dict[str, Any] = {"name": encoder["cnn"], "input_size": encoder["input_size"],
                           "mean": encoder["mean"], "std": encoder["std"], "weights": None,
                           "weights_path": None, "seed": 0, "calibration_images": 0}
    if (random := RANDOM.fullmatch(weights)) is not None:
        cnn.update(seed=int(random[1]), calibration_images=int(random[2]))
    elif weights.startswith("file:"):
        if weights_path is None:
            raise CheckpointError(f"the CNN was loaded from a weights file ({weights[5:]}); "
                                  "pass it again with --weights-path")
        cnn["weights_path"] = str(weights_path)
    else:  # torchvision:<Family>.<NAME> or timm:<name>.<tag>
        cnn["weights"] = weights.rsplit(".", 1)[-1]
    return OmegaConf.create(cnn)


class ImageEncoder:
    """Images -> region features, as the features file was made (same network, scale, float16)."""

    def __init__(self, encoder: dict[str, Any], device: str = "cpu", weights_path: Path | None = None):
        self.cnn = cnn_config(encoder, weights_path)
        self.scale = float(encoder.get("feature_scale", 1.0))
        self.device = device
        self.net = build_backbone(self.cnn).to(device, memory_format=torch.channels_last)
        if self.cnn.calibration_images:
            # A random network is only the one training used after the same calibration.
            paths = encoder.get("calibration_paths")
            if not paths:
                raise CheckpointError("the CNN is randomly initialised and this checkpoint does not name "
                                      "its calibration images; re-extract the features and retrain")
            missing = [p for p in paths if not Path(p).is_file()]
            if missing:
                raise FileNotFoundError(f"the CNN is randomly initialised and calibrated on the training "
                                        f"data's first {len(paths)} images; {missing[0]} is missing")
            calibrate_on_images(self.net, [Path(p) for p in paths], self.cnn, device,
                                int(encoder.get("calibration_batch_size", 32)))

    def read(self, paths: list[Path]) -> tuple[list[Path], torch.Tensor | None, dict[Path, str]]:
        """The readable `paths`, their preprocessed pixels, and why each other one is unreadable."""
        files = ImageFiles(paths, self.cnn.input_size, self.cnn.mean, self.cnn.std, strict=False)
        readable, pixels, failures = [], [], {}
        for path, (image, error) in zip(paths, (files[i] for i in range(len(files))), strict=True):
            if error:
                failures[path] = error
            else:
                readable.append(path)
                pixels.append(image)
        return readable, torch.stack(pixels) if pixels else None, failures

    def __call__(self, paths: list[Path]) -> torch.Tensor:
        """Region features of `paths`; an unreadable one is an error naming it."""
        files = ImageFiles(paths, self.cnn.input_size, self.cnn.mean, self.cnn.std, strict=True)
        return self.encode(torch.stack([files[i][0] for i in range(len(files))]))

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        grid = self.net(pixels.to(self.device, memory_format=torch.channels_last)).float()
        regions = grid.flatten(2).transpose(1, 2) * torch.tensor(self.scale, dtype=torch.float32)
        return regions.half().float()  # what training read from the float16 file


def caption_images(module: CaptionModule, encoder: ImageEncoder, paths: list[Path],
                   batch_size: int = 16) -> list[dict[str, Any]]:
    """Caption and attention (one row of region weights per word) for each image, in order; an
    unreadable image gets `error` (why) instead."""
    module.eval()
    results = []
    for start in range(0, len(paths), batch_size):
        batch = paths[start:start + batch_size]
        readable, pixels, failures = encoder.read(batch)
        captioned = {}
        if pixels is not None:
            with torch.inference_mode():
                tokens, attention = module(encoder.encode(pixels).to(module.device))
            for path, ids, weights in zip(readable, tokens.tolist(), attention.cpu(), strict=True):
                caption = module.vocabulary.decode(ids)
                captioned[path] = {"image": str(path), "caption": caption,
                                   "attention": weights[: len(caption.split())].numpy()}
        results += [captioned.get(path) or {"image": str(path), "error": failures[path]} for path in batch]
    return results


def _figure_path(base: Path, image: Path, several: bool) -> Path:
    return base.with_name(f"{base.stem}_{image.stem}{base.suffix or '.png'}") if several else base


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m captioner.caption", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a .ckpt file from a run's checkpoints/")
    parser.add_argument("images", type=Path, nargs="+", help="image files or folders of images")
    parser.add_argument("--attention", type=Path, metavar="OUT.png",
                        help="write the attention figure (several images: OUT_<image>.png)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of 'image<TAB>caption' lines")
    parser.add_argument("--weights-path", type=Path, help="the CNN weights file, if training used one")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_decode_arguments(parser)
    args = parser.parse_args(argv)
    try:
        paths = image_files(args.images)
        module = load_module(args.checkpoint).to(args.device)
        module.hparams.decode = {**(module.hparams.decode or {}), **decode_overrides(args)}
        encoder = ImageEncoder(module.hparams.get("encoder") or {}, args.device, args.weights_path)
        results = caption_images(module, encoder, paths)
    except (FileNotFoundError, CheckpointError, ImageReadError, KeyError) as error:
        parser.exit(2, f"error: {error}\n")
    captioned = [r for r in results if "caption" in r]
    problems = [f"error: {r['image']}: cannot read image ({r['error']}); not captioned"
                for r in results if "error" in r]
    if args.attention and captioned:
        problems += _draw_figures(captioned, args.attention, module.hparams.encoder.get("grid"),
                                  several=len(paths) > 1)
    for result in captioned:
        del result["attention"]
    if args.json:
        json.dump(captioned, sys.stdout, indent=1)
        print()
    else:
        for result in captioned:
            print(f"{result['image']}\t{result['caption']}")
    sys.stdout.flush()  # the captions first, then what went wrong
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(1)


def _draw_figures(results: list[dict[str, Any]], base: Path, grid: Any, several: bool) -> list[str]:
    """Write each result's attention figure (adding its path as `figure`); the errors, one line each."""
    grid = tuple(grid or (1, results[0]["attention"].shape[1]))
    problems = []
    for result in results:
        figure = _figure_path(base, Path(result["image"]), several)
        try:
            result["figure"] = str(plot_attention(Path(result["image"]), result["caption"].split(),
                                                  result["attention"], grid, figure))
        except (OSError, ValueError) as error:
            problems.append(f"error: cannot write the attention figure {figure} ({error}); the caption "
                            f"of {result['image']} is printed without it")
    return problems


if __name__ == "__main__":
    main()
