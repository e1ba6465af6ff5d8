"""`python -m captioner.evaluate CHECKPOINT`: score a trained captioner on any split, any decoding.

Writes `scores.json` and `results.json`, the captions in the COCO results format
(`[{"image_id": ..., "caption": ...}]`), so any coco-caption tool can check the numbers.
Runs on several devices with `--devices N` (Lightning DDP; every image is scored once).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from captioner.data.datamodule import CaptionDataModule
from captioner.errors import ConfigError, UserError, exit_for_user_error
from captioner.features.cache import records_path
from captioner.features.feature_file import FeatureFile, FeatureFileError
from captioner.inference.decode_arguments import add_decode_arguments, decode_changes
from captioner.inference.trained_model import load_trained
from captioner.model.decoding import DecodeOptions
from captioner.paths import write_atomically
from captioner.records.run_folder import RunFolder
from captioner.settings.reading import decode_settings
from captioner.training.checkpoint_loading import CheckpointError


class FeaturesNotFoundError(UserError, FileNotFoundError):
    """No features file to evaluate on."""


# What makes features comparable; the dataset may differ (train on one, evaluate on another). The
# file's feature_scale (1/RMS of its first batch) differs with the images: evaluation rescales.
CNN_RECORD_KEYS = ("cnn", "weights", "input_size", "normalisation", "grid")


_COCO_FILE_STEM = re.compile(r"COCO_[a-z]+\d{4}_(\d+)")  # COCO_val2014_000000391895


def results_image_id(image_id: str) -> int | str:
    """The id coco-caption's results.json gives an image: COCO's own integer (the readers know a
    COCO image by its file's stem, COCO_val2014_000000391895 -> 391895; coco-caption's loadRes
    refuses ids its annotations do not have), an all-digit id as a number, any other id as it is."""
    if found := _COCO_FILE_STEM.fullmatch(image_id):
        return int(found.group(1))
    return int(image_id) if image_id.isdigit() else image_id


def evaluate(checkpoint: Path, features: Path | None = None, split: str = "test",
             decode: dict[str, Any] | None = None, output: Path | None = None,
             devices: int | str = 1, accelerator: str = "auto", strategy: str = "auto",
             batch_size: int = 256, spice: bool = False, meteor: bool = True) -> dict[str, Any]:
    """Caption every image of `split` and score the captions; rank 0 writes the files."""
    changes = _checked_decode_changes(decode)  # a bad option must not cost loading the checkpoint
    module = load_trained(checkpoint)
    folder = RunFolder.of_checkpoint(checkpoint)
    given = features is not None
    features = Path(features) if given else folder.features_file()
    if not given and features is not None:
        features = _records_file_beside(features, (module.hparams.get("cnn") or {}).get("records"))
    if features is None:
        raise FeaturesNotFoundError(
            f"{checkpoint}: its run folder records no features file (no metrics.json nor "
            ".hydra/config.yaml); pass --features <file.h5> (made by the same CNN as the checkpoint)")
    if not features.is_file():
        source = "" if given else " (the file the checkpoint's run trained on)"
        raise FeaturesNotFoundError(f"features file {features}{source} not found; pass --features "
                                    "<file.h5> (made by the same CNN as the checkpoint)")
    expected = module.hparams.get("cnn") or {}
    file = FeatureFile(features)
    found = file.cnn_record()
    differences = [f"{key}: checkpoint {expected[key]!r}, features {found.get(key)!r}"
                   for key in CNN_RECORD_KEYS if key in expected and found.get(key) != expected[key]]
    channels = int(module.hparams.feature_dim)
    if module.top is None and file.shape[2] != channels:  # also where the checkpoint records no CNN
        differences.append(f"channels: checkpoint {channels}, features {file.shape[2]}")
    calibrated_on = expected.get("calibration_paths")  # a random CNN's: normalised on these images
    if calibrated_on and calibrated_on != found.get("calibration_paths"):  # another network
        differences.append("calibration_paths: the checkpoint's random CNN was normalised on other "
                           "image files than this file's")
    if int(expected.get("trainable_blocks", 0) or 0) != int(found.get("trainable_blocks", 0) or 0):
        differences.append(f"trainable_blocks: checkpoint {expected.get('trainable_blocks', 0)}, features "
                           f"{found.get('trainable_blocks', 0)}")
    if differences:
        raise CheckpointError(f"{features} was not made by the CNN this checkpoint was trained on: "
                              + "; ".join(differences))
    if not given and expected.get("records") and found.get("records") != expected["records"]:
        # the run's own file, re-extracted for other records since (by an earlier version, which
        # rebuilt it in place): its split would not be the one the run was tested on
        raise CheckpointError(
            f"{features}, the features file this run trained on, now holds other images or captions "
            f"(records {found.get('records')}, the run's {expected['records']}): its {split} split "
            "may not be the run's. Pass --features with a file made from the run's dataset options "
            "(python -m captioner.prepare with its overrides makes one)")
    module.test_decoding = options = module.test_decoding.with_changes(**changes)
    module.hparams.spice, module.hparams.meteor = spice, meteor
    # Before the decoding: a bad --output must not cost it (every rank: none writes before rank 0 checks).
    output = _writable_folder(Path(output) if output else folder.evaluation(split, options.label(),
                                                                            features if given else None))

    # the model learned features x the checkpoint's scale; this file's are x its own (a checkpoint
    # that records no CNN: taken as it is)
    rescale = (float(expected["feature_scale"]) / float(found.get("feature_scale", 1.0))
               if "feature_scale" in expected else 1.0)
    datamodule = CaptionDataModule(features, eval_batch_size=batch_size, vocabulary=module.vocabulary,
                                   max_caption_length=module.hparams.max_caption_length,
                                   val_split=split, test_split=split, rescale_eval_features=rescale)
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, strategy=strategy, logger=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    scores = module.last_scores["test"]  # float64, as coco-caption computed them
    captions = module.last_captions["test"]
    image_ids = datamodule.features.image_ids
    summary = {"checkpoint": str(checkpoint), "features": str(features), "split": split,
               "decode": options.as_dict(), "images": len(captions), "scores": scores}
    if trainer.is_global_zero:
        results = [{"image_id": results_image_id(image_ids[index]), "caption": captions[index]}
                   for index in sorted(captions)]
        write_atomically(output / "results.json", json.dumps(results, indent=1))
        write_atomically(output / "scores.json", json.dumps(summary, indent=1))
        summary["output"] = str(output)
    return summary


def _records_file_beside(features: Path, records: str | None) -> Path:
    """The run's file: `features`, or the file of the run's `records` beside it where `features`
    holds other ones (a run whose metrics.json is gone is pointed at its config's default file)."""
    if records:
        own = records_path(features, records)
        try:
            elsewhere = not features.is_file() or FeatureFile(features).identity.get("records") != records
        except FeatureFileError:  # damaged: the run's own file beside it, where there is one
            elsewhere = True
        if elsewhere and own.is_file():
            return own
    return features


def _checked_decode_changes(decode: Mapping[str, Any] | None) -> dict[str, Any]:
    """The decoding settings `decode` changes (None: keep the checkpoint's), checked as the CLI's
    flags are (`decode_settings`): a bad one is a ConfigError naming it."""
    changes = {key: value for key, value in (decode or {}).items() if value is not None}
    known = [field.name for field in fields(DecodeOptions)]
    for key in changes:
        if key not in known:
            raise ConfigError(f"decode option {key!r}: expected one of {', '.join(known)}")
    decode_settings(changes)
    return changes


class OutputFolderError(UserError, OSError):
    """The folder for the evaluation's files cannot be made or written."""


def _writable_folder(output: Path) -> Path:
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputFolderError(f"--output {output}: cannot make the folder ({error.strerror or error}); "
                                "pass another folder") from None
    if not os.access(output, os.W_OK):
        raise OutputFolderError(f"--output {output}: the folder is not writable; pass another folder")
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m captioner.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a .ckpt file from a run's checkpoints/")
    parser.add_argument("--features", type=Path, help="HDF5 features (default: the run's own file)")
    parser.add_argument("--split", default="test", help="any split of the features file (default: test)")
    add_decode_arguments(parser)
    parser.add_argument("--output", type=Path, help="folder for scores.json and results.json "
                        "(default: <run>/evaluations/<split>-<decoding and its settings>[-<features>])")
    parser.add_argument("--devices", default="1", help="number of devices; >1 runs Lightning DDP")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--spice", action="store_true", help="also SPICE, where it can run (Java 8, CoreNLP)")
    parser.add_argument("--no-meteor", dest="meteor", action="store_false",
                        help="leave METEOR out (its Java process takes ~7 s to start)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")

    devices = int(args.devices) if args.devices.isdigit() else args.devices
    torch.set_float32_matmul_precision("high")
    try:
        decode = decode_changes(args)  # checked before the checkpoint is read
        summary = evaluate(args.checkpoint, args.features, args.split, decode, args.output, devices=devices,
                           accelerator=args.accelerator,
                           strategy="ddp" if isinstance(devices, int) and devices > 1 else "auto",
                           batch_size=args.batch_size, spice=args.spice, meteor=args.meteor)
    except (UserError, FileNotFoundError, ValueError) as error:  # e.g. a --split the file lacks
        exit_for_user_error(error, parser.prog)
    if "output" in summary:
        shown = " ".join(f"{name}={value:.3f}" for name, value in summary["scores"].items())
        print(f"{summary['split']} ({summary['images']} images, {summary['decode']['strategy']}): {shown}")
        print(f"wrote {summary['output']}/scores.json and results.json")


if __name__ == "__main__":
    main()
