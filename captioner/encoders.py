"""CNN backbones that turn an image into a grid of region features, and the extraction loop.

One builder per architecture, torchvision style; each returns a module mapping a normalised
(B, 3, S, S) batch to its last convolutional grid (B, C, h, w).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset

from captioner.features import FeatureFileWriter
from captioner.sources import ImageRecord

log = logging.getLogger(__name__)

INCEPTION_V3_LAYERS = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
)


def inception_v3_grid(weights: Any) -> nn.Module:
    """InceptionV3 up to Mixed_7c: 299 px -> 8x8x2048. Expects (x - 0.5) / 0.5 input."""
    net = torchvision.models.inception_v3(weights=weights, aux_logits=weights is not None,
                                          init_weights=weights is None)
    return nn.Sequential(*[getattr(net, name) for name in INCEPTION_V3_LAYERS])


def vgg16_grid(weights: Any) -> nn.Module:
    """VGG16 conv5_3 before the last pooling: 224 px -> 14x14x512."""
    return torchvision.models.vgg16(weights=weights).features[:-1]


@dataclass(frozen=True)
class Architecture:
    build: Callable[[Any], nn.Module]
    weights_enum: str  # torchvision enum class name, for `cnn.weights=IMAGENET1K_V1`


ARCHITECTURES: dict[str, Architecture] = {
    "inception_v3": Architecture(inception_v3_grid, "Inception_V3_Weights"),
    "vgg16": Architecture(vgg16_grid, "VGG16_Weights"),
}


class WeightsNotFoundError(FileNotFoundError):
    pass


def weights_identity(cnn: Any) -> str:
    """What the features depend on besides the architecture: where the weights came from."""
    if cnn.get("weights_path"):
        return f"file:{Path(cnn.weights_path).name}"
    if cnn.get("weights") is None:
        return f"random(seed={cnn.get('seed', 0)},calibration_images={cnn.get('calibration_images', 0)})"
    return f"torchvision:{ARCHITECTURES[cnn.name].weights_enum}.{cnn.weights}"


def build_backbone(cnn: Any) -> nn.Module:
    """The grid network of config `cnn` (name, weights, weights_path, seed) in eval mode."""
    if cnn.name not in ARCHITECTURES:
        raise ValueError(f"unknown cnn {cnn.name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    arch = ARCHITECTURES[cnn.name]
    seed = cnn.get("seed", 0)
    if cnn.get("weights_path"):
        path = Path(cnn.weights_path).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"cnn.weights_path={path} does not exist; point it at a "
                                       f"{cnn.name} state dict (.pth)")
        torch.manual_seed(seed)
        net = arch.build(None)
        state = torch.load(path, map_location="cpu", weights_only=True)
        _load_grid_state(net, cnn.name, state, path)
        return net.eval()
    if cnn.get("weights") is None:
        log.warning("cnn.weights=null: %s is randomly initialised (seed %d), not pretrained",
                    cnn.name, seed)
        torch.manual_seed(seed)
        return arch.build(None).eval()
    try:
        enum = torchvision.models.get_weight(f"{arch.weights_enum}.{cnn.weights}")
    except (ValueError, KeyError) as error:
        raise ValueError(f"cnn.weights={cnn.weights!r} is not a weight of {arch.weights_enum} "
                         f"({error})") from error
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    try:
        net = arch.build(enum)
    except Exception as error:  # urllib/OSError from the download, hash mismatch, ...
        raise WeightsNotFoundError(
            f"could not load {arch.weights_enum}.{cnn.weights} for cnn={cnn.name} ({error}). "
            f"Download {enum.url} and put it at {cached} (the torch hub cache, see TORCH_HOME), "
            f"or set cnn.weights_path=<file>, or cnn.weights=null for random weights") from error
    return net.eval()


def _load_grid_state(net: nn.Module, name: str, state: dict, path: Path) -> None:
    """Load a full-model state dict into the grid network (keys of dropped layers ignored)."""
    if isinstance(net, nn.Sequential) and name == "inception_v3":
        renamed = {}
        for key, value in state.items():
            head, _, rest = key.partition(".")
            if head in INCEPTION_V3_LAYERS:
                renamed[f"{INCEPTION_V3_LAYERS.index(head)}.{rest}"] = value
        state = renamed
    elif name == "vgg16":
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    missing, _ = net.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"{path}: not {name} weights, missing {len(missing)} tensors "
                         f"(first: {missing[0]})")


def calibrate_random_network(net: nn.Module, images: torch.Tensor, batch_size: int = 32) -> str:
    """Data-dependent initialisation of a randomly initialised network from `images`.

    A deep random ReLU network maps every image to nearly the same grid (random InceptionV3
    with identity BatchNorm: across-image std ~6% of the signal), so its features carry
    little. Normalising every layer on the dataset's own images keeps them apart:
    with BatchNorm layers, their statistics are estimated on `images`; without (VGG16), each
    convolution's weights and bias are rescaled so its outputs have zero mean and unit variance
    per channel (Kraehenbuehl et al. 2016). Returns what was done, for the file's attributes.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        if norms:
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None  # cumulative average over all calibration batches
            net.train()
            for start in range(0, len(images), batch_size):
                net(images[start:start + batch_size])
            net.eval()
            return f"batchnorm statistics from {len(images)} images"
        handles = [m.register_forward_hook(_standardise_conv_output)
                   for m in net.modules() if isinstance(m, nn.Conv2d)]
        try:
            net(images)  # layer by layer: each hook fixes its conv before the next one runs
        finally:
            for handle in handles:
                handle.remove()
        return f"conv outputs standardised on {len(images)} images"


def _standardise_conv_output(conv: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    mean = output.mean(dim=(0, 2, 3))
    std = output.std(dim=(0, 2, 3)) + 1e-5
    conv.weight.div_(std.view(-1, 1, 1, 1))
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros_like(mean))
    conv.bias.sub_(mean).div_(std)
    return (output - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


class ImageReadError(OSError):
    pass


class ImageFiles(Dataset):
    """Decoded, resized and normalised images, for the extraction DataLoader's workers.

    Items are (image, error): an unreadable or truncated file gives a zero image and the reason,
    unless `strict`, where it is an error naming the file.
    """

    def __init__(self, paths: Sequence[Path], size: int, mean: Sequence[float], std: Sequence[float],
                 strict: bool = True):
        self.paths = list(paths)
        self.size = size
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.strict = strict

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        except (OSError, UnidentifiedImageError) as error:
            if self.strict:
                raise ImageReadError(f"{path}: cannot read image ({error}); replace or remove the "
                                     "file, or set dataset.strict=false to skip such images") from error
            return torch.zeros(3, self.size, self.size), f"{error}" or type(error).__name__
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        return (pixels.float() / 255.0 - self.mean) / self.std, ""


def extract_features(records: Sequence[ImageRecord], out_path: Path, cnn: Any,
                     identity: dict[str, Any], batch_size: int = 32, num_workers: int = 2,
                     device: str | None = None, strict: bool = False) -> Path:
    """Run the CNN over every record's image and write `out_path` (resuming a partial file).

    Unreadable images are left out of every split and listed in the file's `skipped_images`
    attribute; with `strict` the first one stops the extraction.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # channels_last: ~1.5x faster convolutions on CPU (oneDNN) and on tensor-core GPUs.
    net = build_backbone(cnn).to(device, memory_format=torch.channels_last)

    calibration = int(cnn.get("calibration_images", 0)) if cnn.get("weights") is None else 0
    calibrated = "none"
    if calibration and not cnn.get("weights_path"):
        # Always the first images of the dataset, so a resumed extraction rebuilds the same network.
        first = ImageFiles([r.path for r in records[:calibration]], cnn.input_size, cnn.mean, cnn.std,
                           strict=strict)
        readable = [image for image, error in (first[i] for i in range(len(first))) if not error]
        batch = torch.stack(readable).to(device, memory_format=torch.channels_last)
        calibrated = calibrate_random_network(net, batch, cnn.batch_size)
        log.info("random %s: %s", cnn.name, calibrated)
    with torch.inference_mode():
        probe = net(torch.zeros(1, 3, cnn.input_size, cnn.input_size, device=device))
    channels, grid_h, grid_w = probe.shape[1:]
    writer = FeatureFileWriter(out_path, records, grid_h * grid_w, channels, identity)
    try:
        start = writer.images_done
        if start:
            log.info("resuming %s at image %d of %d", writer.partial, start, len(records))
        images = ImageFiles([r.path for r in records[start:]], cnn.input_size, cnn.mean, cnn.std,
                            strict=strict)
        loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers,
                            pin_memory=device == "cuda")
        scale = writer.attr("feature_scale")
        began, done = time.perf_counter(), 0
        for batch, errors in loader:
            with torch.inference_mode(), torch.autocast(device_type="cuda", enabled=device == "cuda"):
                grid = net(batch.to(device, memory_format=torch.channels_last, non_blocking=True))
            regions = grid.float().flatten(2).transpose(1, 2).cpu().numpy()  # (B, h*w, C)
            failed = [i for i, error in enumerate(errors) if error]
            for i in failed:
                record = records[start + done + i]
                log.warning("skipping unreadable image %s: %s", record.path, errors[i])
                writer.skip(start + done + i, f"{record.path}: {errors[i]}")
            regions[failed] = 0.0
            if scale is None:
                # An uncalibrated random InceptionV3 reaches ~1e11 and overflows float16: scale the
                # file once so its first batch has unit RMS; the same factor applies to every image.
                rms = float(np.sqrt(np.mean(np.square(regions, dtype=np.float64))))
                scale = 1.0 / rms if rms > 0 else 1.0
                writer.set_attrs(feature_scale=scale)
            writer.write(start + done, regions * scale)
            done += len(regions)
            rate = done / (time.perf_counter() - began)
            if done == len(regions) or done % (batch_size * 20) < batch_size or start + done == len(records):
                eta = (len(records) - start - done) / rate
                log.info("features %d/%d  %.1f images/s  ETA %.0fs", start + done, len(records), rate, eta)
        return writer.finish(grid=[int(grid_h), int(grid_w)], regions=int(grid_h * grid_w),
                             channels=int(channels), input_size=int(cnn.input_size),
                             mean=list(cnn.mean), std=list(cnn.std), feature_scale_rule=
                             "features multiplied by feature_scale = 1/RMS of the first batch",
                             random_init_calibration=calibrated,
                             created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    finally:
        writer.close()
