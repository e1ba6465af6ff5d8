"""Feature extraction: images on disk -> CNN grids -> the HDF5 features file, streaming.

A DataLoader's workers decode and resize JPEGs while the CNN runs (on a GPU they only read them,
and the GPU decodes: image_batches.py); each batch is written as it comes, so memory stays flat,
and an interrupted extraction resumes at the first unwritten image.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from captioner.features.backbones import build_backbone, calibrate_random_network, split_backbone
from captioner.features.feature_file import FeatureFileError, FeatureFileWriter
from captioner.features.image_batches import ImageFiles, ImageReadError, decoding_place, image_batches
from captioner.settings import CnnSettings
from captioner.sources import ImageRecord

log = logging.getLogger(__name__)

# A random network's BatchNorm statistics are estimated batch by batch, so they depend on the batch
# size: a fixed one keeps the network (and a file's identity, which does not hold cnn.batch_size)
# the same whatever batch the extraction runs in.
CALIBRATION_BATCH_SIZE = 32


def calibrate_on_images(net: torch.nn.Module, paths: Sequence[Path], cnn: CnnSettings, device: str,
                        batch_size: int, strict: bool = False) -> str:
    """`calibrate_random_network` on these image files, preprocessed as `cnn` says; unreadable
    ones are left out (an error if `strict`). Returns what was done."""
    files = ImageFiles(paths, cnn.input_size, cnn.mean, cnn.std, strict=strict)
    readable = []
    for path, (image, error) in zip(files.paths, (files[i] for i in range(len(files))), strict=True):
        if error:
            log.warning("calibration: skipping unreadable image %s: %s", path, error)
        else:
            readable.append(image)
    if not readable:
        raise ImageReadError(
            f"none of the {len(paths)} calibration image(s) of the random {cnn.name} can be read "
            f"({', '.join(map(str, paths[:3]))}{' ...' if len(paths) > 3 else ''}); replace them, or "
            "raise cnn.calibration_images so that readable images are among the first ones")
    batch = torch.stack(readable).to(device, memory_format=torch.channels_last)
    return calibrate_random_network(net, batch, batch_size)


def _top_attributes(cnn: CnnSettings, probe: torch.Tensor, scale: float) -> dict[str, Any]:
    """What the model needs to run the trainable top on this file's activations."""
    return {"top_grid": [int(d) for d in probe.shape[2:]], "top_channels": int(probe.shape[1]),
            "top_scale": float(scale), "top_rule": f"the CNN's last {cnn.trainable_blocks} blocks run in the "
            "model on these activations (/ feature_scale); their output x top_scale has unit RMS"}


def unit_rms_scale(rms: Any, partial: Path, what: str) -> float:
    """1 / the first batch's RMS, the factor every image's features are stored at. A non-finite RMS
    is an error before anything is saved: a scale of 0 written to the partial file would make a
    resumed extraction store every image as zeros, which pass every later check."""
    rms = float(rms)
    if not math.isfinite(rms):
        raise FeatureFileError(
            f"{partial}: {what} on the first batch are not finite (RMS {rms}), so no scale can be set: "
            "a broken CNN or weights file, or an uncalibrated random network overflowing float16 on "
            "a GPU (raise cnn.calibration_images)")
    return 1.0 / rms if rms > 0 else 1.0


def extract_features(records: Sequence[ImageRecord], out_path: Path, cnn: CnnSettings,
                     identity: dict[str, Any], batch_size: int = 32, num_workers: int = 2,
                     device: str | None = None, strict: bool = False) -> Path:
    """Run the CNN over every record's image and write `out_path` (resuming a partial file).

    Unreadable images are left out of every split and listed in the file's `skipped_images`
    attribute; with `strict` the first one stops the extraction.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = torch.device(device).type == "cuda"
    # channels_last: ~1.5x faster convolutions on CPU (oneDNN) and on tensor-core GPUs.
    net = build_backbone(cnn).to(device, memory_format=torch.channels_last)

    calibration = cnn.calibration_images if cnn.random_weights else 0
    calibrated = "none"
    if calibration:
        # Always the first images of the dataset, so a resumed extraction rebuilds the same network.
        calibrated = calibrate_on_images(net, [r.path for r in records[:calibration]], cnn, device,
                                         CALIBRATION_BATCH_SIZE, strict)
        log.info("random %s: %s", cnn.name, calibrated)
    # A trainable top: the file holds what enters the CNN's last blocks; the model runs them.
    net, top = split_backbone(cnn.name, net, cnn.trainable_blocks)
    with torch.inference_mode():
        probe = net(torch.zeros(1, 3, cnn.input_size, cnn.input_size, device=device))
        top_probe = top(probe) if top is not None else None
    channels, grid_h, grid_w = probe.shape[1:]
    writer = FeatureFileWriter(out_path, records, grid_h * grid_w, channels, identity)
    try:
        start = writer.images_done
        if start:
            log.info("resuming %s at image %d of %d", writer.partial, start, len(records))
        skipped = json.loads(writer.attr("skipped_images") or "{}")  # by a run with dataset.strict=false
        if strict and skipped:
            reason = next(iter(skipped.values()))
            raise ImageReadError(f"{reason} (skipped by the interrupted extraction in {writer.partial}); "
                                 "replace or remove the file, or set dataset.strict=false to skip such "
                                 "images")
        place = decoding_place(cnn.decode, device)
        batches = image_batches([r.path for r in records[start:]], cnn.input_size, cnn.mean, cnn.std,
                                place, device, batch_size, num_workers, strict)
        scale = writer.attr("feature_scale")
        top_scale = writer.attr("top_scale")
        began, done = time.perf_counter(), 0
        for batch, errors in batches:
            with torch.inference_mode(), torch.autocast(device_type="cuda", enabled=on_gpu):
                grid = net(batch.contiguous(memory_format=torch.channels_last))
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
                scale = unit_rms_scale(np.sqrt(np.mean(np.square(regions, dtype=np.float64))),
                                       writer.partial, "the CNN's features")
                writer.set_attrs(feature_scale=scale)
            if top is not None and top_scale is None:
                # The top's output (the CNN's final grid) gets unit RMS on the first batch, as a
                # frozen CNN's grid is stored: the decoder sees the same scale either way.
                with torch.inference_mode():
                    final = top(torch.from_numpy(regions).to(device).transpose(1, 2).reshape(
                        len(regions), channels, grid_h, grid_w)).float()
                top_scale = unit_rms_scale(final.double().square().mean().sqrt(), writer.partial,
                                           "the CNN top's output")
                writer.set_attrs(top_scale=top_scale)
            # float32 arithmetic whether `scale` was just computed or read back from the file, so
            # a resumed extraction rounds to float16 exactly as an uninterrupted one.
            writer.write(start + done, regions * np.float32(scale))
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
                             # the caption CLI rebuilds a random network from these images, in
                             # batches of this size (BatchNorm statistics depend on it)
                             calibration_paths=json.dumps([str(r.path) for r in records[:calibration]]),
                             calibration_batch_size=CALIBRATION_BATCH_SIZE,
                             # where the weights file was: the caption CLI finds it there again
                             weights_path=str(Path(cnn.weights_path).expanduser().resolve())
                             if cnn.weights_path else "",
                             created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             # provenance, not identity: both places give equal pixels
                             image_decoding=f"{place} ({'torchvision' if place == 'device' else 'PIL'} "
                             f"on {torch.device(device).type})",
                             **(_top_attributes(cnn, top_probe, top_scale) if top is not None else {}))
    finally:
        writer.close()
