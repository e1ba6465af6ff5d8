"""Caption images from Python: `Captioner.from_checkpoint(path).caption(images)`.

The checkpoint names the CNN that made its training features (its record: name, weights, input
size, normalisation, scale); the same CNN is rebuilt, so a new image gets the features training
would have given it. Images may be file paths, PIL images or uint8 tensors (3, H, W), in any mix;
they are captioned in batches, on the device asked for. An image that cannot be read gets its own
error, and the others are still captioned. `python -m captioner.caption` is a shell over this.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from captioner.errors import ConfigError
from captioner.features.image_batches import UNREADABLE
from captioner.features.image_featurizer import CnnNotRebuildableError, ImageFeaturizer
from captioner.inference.trained_model import load_trained
from captioner.model.decoding import DecodeOptions
from captioner.settings.reading import decode_settings
from captioner.training.module import CaptionModule

ImageInput = str | Path | Image.Image | torch.Tensor


@dataclass
class CaptionResult:
    """One image's caption; `error` instead when the image could not be read."""

    image: str  # the file's path, or `<image N>` for an image given in memory (N: its position)
    caption: str | None = None
    words: list[str] = field(default_factory=list)
    # (words, regions): where the decoder looked for each word (with `attention=True`); the
    # regions are the CNN's grid, row by row (`Captioner.grid`)
    attention: np.ndarray | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class DeviceError(ConfigError):
    """A device torch does not know, or one this machine does not have."""


def usable_device(device: str | torch.device) -> torch.device:
    """`device` as torch names it, checked before any model is loaded onto it."""
    try:
        found = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"device {device!r}: not a device name torch knows (cpu, cuda, cuda:1, "
                          "mps)") from None
    if found.type == "cuda" and (found.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                          "torch can use; pass cpu")
    if found.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r}: MPS is not available here; pass cpu")
    return found


class Captioner:
    """A trained captioner with the CNN its features came from: images in, captions out."""

    def __init__(self, module: CaptionModule, featurizer: ImageFeaturizer, checkpoint: Path | None = None):
        self.module = module.eval()
        self.featurizer = featurizer
        self.checkpoint = checkpoint

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str = "cpu",
                        weights_path: str | Path | None = None) -> Captioner:
        """The model of a run's `.ckpt` file on `device` ("cpu", "cuda", "cuda:1"), with its CNN.

        `weights_path`: the CNN's weights file, when the run used one that has moved since (its
        sha256 must be the recorded one). Loading never executes pickled code from the file.
        """
        device = str(usable_device(device))
        module = load_trained(Path(checkpoint)).to(device)
        try:
            featurizer = ImageFeaturizer(module.hparams.get("cnn") or {}, device,
                                         Path(weights_path) if weights_path else None)
        except CnnNotRebuildableError as error:
            raise CnnNotRebuildableError(f"{checkpoint}: {error}") from error
        return cls(module, featurizer, Path(checkpoint))

    @property
    def device(self) -> torch.device:
        return self.module.device

    @property
    def grid(self) -> tuple[int, int] | None:
        """The CNN's grid of regions (rows, columns) that attention maps cover (None: not recorded)."""
        cnn = self.module.hparams.get("cnn") or {}
        recorded = cnn.get("top_grid") or cnn.get("grid")  # a trainable top's output grid, if any
        return (int(recorded[0]), int(recorded[1])) if recorded else None

    @property
    def decoding(self) -> DecodeOptions:
        """How captions are written unless `caption` is told otherwise: the checkpoint's setting."""
        return self.module.test_decoding

    def caption(self, images: ImageInput | Iterable[ImageInput], *, decode: str | None = None,
                beam_size: int | None = None, length_penalty: float | None = None,
                block_trigram_repeats: bool | None = None, allow_unk: bool | None = None,
                attention: bool = False, batch_size: int = 16) -> list[CaptionResult]:
        """One result per image, in order. `decode` is greedy or beam; options left None keep the
        checkpoint's. A bad option is a ConfigError before anything is read."""
        changes = {"strategy": decode, "beam_size": beam_size, "length_penalty": length_penalty,
                   "block_trigram_repeats": block_trigram_repeats, "allow_unk": allow_unk}
        changes = {key: value for key, value in changes.items() if value is not None}
        decode_settings(changes)
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: expected an integer >= 1")
        options = self.decoding.with_changes(**changes)
        items = [images] if isinstance(images, (str, Path, Image.Image, torch.Tensor)) else list(images)
        results: list[CaptionResult] = []
        for start in range(0, len(items), batch_size):
            results += self._caption_batch(items[start:start + batch_size], start, options, attention)
        return results

    def evaluate(self, split: str = "test", **options: Any) -> dict[str, float]:
        """The split's coco-caption scores, as `python -m captioner.evaluate` prints them (it also
        writes results.json and scores.json into the run's evaluations/ folder)."""
        if self.checkpoint is None:
            raise ValueError("evaluate needs a Captioner made by from_checkpoint")
        return evaluate_checkpoint(self.checkpoint, split=split, **options)

    def _caption_batch(self, batch: list[ImageInput], first: int, options: DecodeOptions,
                       attention: bool) -> list[CaptionResult]:
        names = [str(item) if isinstance(item, (str, Path)) else f"<image {first + i}>"
                 for i, item in enumerate(batch)]
        pixels, errors = [], {}
        for index, item in enumerate(batch):
            try:
                pixels.append(self._pixels(item))
            except (*UNREADABLE, TypeError, ValueError) as error:
                errors[index] = f"{error}" or type(error).__name__
        readable = [i for i in range(len(batch)) if i not in errors]
        captioned = {}
        if readable:
            with torch.inference_mode():
                features = self.featurizer.encode(torch.stack(pixels)).to(self.device)
                tokens, weights = self.module(features, options)
            for index, ids, maps in zip(readable, tokens.tolist(), weights.cpu(), strict=True):
                text = self.module.vocabulary.decode(ids)
                words = text.split()
                captioned[index] = CaptionResult(names[index], text, words,
                                                 maps[: len(words)].float().numpy() if attention else None)
        return [captioned.get(i) or CaptionResult(names[i], error=errors[i]) for i in range(len(batch))]

    def _pixels(self, item: ImageInput) -> torch.Tensor:
        if isinstance(item, (str, Path)):
            with Image.open(item) as image:
                return self.featurizer.pixels(image)
        if isinstance(item, Image.Image):
            return self.featurizer.pixels(item)
        if isinstance(item, torch.Tensor):
            if item.dtype != torch.uint8 or item.ndim != 3 or item.shape[0] not in (1, 3):
                raise ValueError(f"a tensor image must be uint8 (3, H, W) or (1, H, W), as "
                                 f"torchvision.io.read_image gives; got {item.dtype} {tuple(item.shape)}")
            array = item.expand(3, -1, -1).permute(1, 2, 0).cpu().numpy()
            return self.featurizer.pixels(Image.fromarray(np.ascontiguousarray(array)))
        raise TypeError(f"cannot caption a {type(item).__name__}: give a path, a PIL image or a uint8 tensor")


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", **options: Any) -> dict[str, float]:
    """The coco-caption scores of `checkpoint` on `split` (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D), as
    `python -m captioner.evaluate` prints them; `options` are `inference.evaluate.evaluate`'s
    (features, decode, output, devices, batch_size, meteor, ...)."""
    from captioner.inference.evaluate import evaluate

    return dict(evaluate(Path(checkpoint), split=split, **options)["scores"])
