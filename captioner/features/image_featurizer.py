"""New images -> region features, exactly as the features file was made: the CNN rebuilt from the
record a checkpoint keeps (name, weights, input size, normalisation, scale; a random network is
calibrated again on the same images), and the same float16 rounding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from captioner.errors import UserError
from captioner.features.backbones import build_backbone, split_backbone
from captioner.features.extraction import calibrate_on_images
from captioner.features.image_batches import ImageFiles
from captioner.features.weights_source import WeightsSource, file_sha256
from captioner.settings import CnnSettings


class CnnNotRebuildableError(UserError, ValueError):
    """The record does not say enough to rebuild the CNN (e.g. a weights file it no longer finds)."""


def cnn_settings(record: dict[str, Any], weights_path: Path | None = None) -> CnnSettings:
    """The CNN that made the features, from their record (`FeatureFile.cnn_record`).

    A weights file is taken from `weights_path` if given, else from where it was when the
    features were made; either way its sha256 must be the one recorded.
    """
    try:
        source = WeightsSource.from_dict(record["weights"])
        cnn = {"name": record["cnn"], "input_size": int(record["input_size"]), "mean": tuple(record["mean"]),
               "std": tuple(record["std"]), "trainable_blocks": int(record.get("trainable_blocks", 0) or 0),
               **source.cnn_options()}
    except (KeyError, TypeError, ValueError) as error:  # no record (another tool's checkpoint), an old one
        missing = f"no {error}" if isinstance(error, KeyError) else str(error)
        raise CnnNotRebuildableError(
            f"the record of the CNN that made the training features is missing or unreadable ({missing}); "
            "captioning new images needs it (a checkpoint trained by this version records it)") from error
    if source.kind == "file":
        cnn["weights_path"] = _weights_file(source, record.get("weights_path") or None, weights_path)
    return CnnSettings(**cnn)


def _weights_file(source: WeightsSource, recorded: str | None, given: Path | None) -> Path:
    path = Path(given).expanduser() if given else Path(recorded) if recorded else None
    wanted = f"sha256 {source.sha256}" if source.sha256 else "no checksum recorded"
    if path is None:
        raise CnnNotRebuildableError(f"the CNN was loaded from a weights file ({source.name}, {wanted}) "
                                     "whose place was not recorded; pass it with --weights-path")
    if not path.is_file():
        raise CnnNotRebuildableError(f"the CNN's weights file {path} ({wanted}) is not there; pass its "
                                     "new place with --weights-path")
    if source.sha256 and (found := file_sha256(path)) != source.sha256:
        raise CnnNotRebuildableError(f"the CNN's weights file {path} has changed: sha256 {found}, the "
                                     f"features were made with {source.sha256}; pass the file they were "
                                     "made with via --weights-path")
    return path


class ImageFeaturizer:
    """Images -> region features, as the features file was made (same network, scale, float16)."""

    def __init__(self, record: dict[str, Any], device: str = "cpu", weights_path: Path | None = None):
        self.cnn = cnn_settings(record, weights_path)
        self.scale = float(record.get("feature_scale", 1.0))
        self.device = device
        # With a trainable top the checkpoint runs the CNN's last blocks: only the frozen bottom here.
        bottom, _ = split_backbone(self.cnn.name, build_backbone(self.cnn), self.cnn.trainable_blocks)
        self.net = bottom.to(device, memory_format=torch.channels_last)
        if self.cnn.calibration_images:
            # A random network is only the one training used after the same calibration.
            paths = record.get("calibration_paths")
            if not paths:
                raise CnnNotRebuildableError("the CNN is randomly initialised and its record does not "
                                             "name its calibration images; re-extract the features "
                                             "and retrain")
            missing = [p for p in paths if not Path(p).is_file()]
            if missing:
                raise CnnNotRebuildableError(f"the CNN is randomly initialised and calibrated on the "
                                             f"training data's first {len(paths)} images; {missing[0]} "
                                             "is missing")
            calibrate_on_images(self.net, [Path(p) for p in paths], self.cnn, device,
                                int(record.get("calibration_batch_size", 32)))

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

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """An image already in memory, preprocessed exactly as a file of it would be."""
        return ImageFiles([], self.cnn.input_size, self.cnn.mean, self.cnn.std).pixels(image)

    def __call__(self, paths: list[Path]) -> torch.Tensor:
        """Region features of `paths`; an unreadable one is an error naming it."""
        files = ImageFiles(paths, self.cnn.input_size, self.cnn.mean, self.cnn.std, strict=True)
        return self.encode(torch.stack([files[i][0] for i in range(len(files))]))

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        grid = self.net(pixels.to(self.device, memory_format=torch.channels_last)).float()
        regions = grid.flatten(2).transpose(1, 2) * torch.tensor(self.scale, dtype=torch.float32)
        return regions.half().float()  # what training read from the float16 file
