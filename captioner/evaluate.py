"""`python -m captioner.evaluate CHECKPOINT`: score a trained captioner on any split, any decoding.

Writes `scores.json` and `results.json`, the captions in the COCO results format
(`[{"image_id": ..., "caption": ...}]`), so any coco-caption tool can check the numbers.
Runs on several devices with `--devices N` (Lightning DDP; every image is scored once).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from captioner.checkpoint_io import CheckpointError, load_module
from captioner.datamodule import CaptionDataModule
from captioner.decode_options import add_decode_arguments, decode_overrides
from captioner.errors import UserError, exit_for_user_error, user_errors
from captioner.features import FeatureFile
from captioner.paths import absolute, write_atomically
from captioner.prepare import default_features_path


class FeaturesNotFoundError(UserError, FileNotFoundError):
    """No features file to evaluate on."""


# The file's feature_scale too: the model learned features at that scale.
ENCODER_KEYS = ("cnn", "weights", "input_size", "normalisation", "grid", "feature_scale")


def _features_of_run(checkpoint: Path) -> Path | None:
    """The features file the checkpoint's run trained on (`<run>/checkpoints/x.ckpt`).

    From the run's metrics.json (written as soon as the features are ready, so also for a killed or
    unfinished run), else from the config it recorded in `.hydra/`.
    """
    run_dir = Path(checkpoint).resolve().parent.parent
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        try:
            found = json.loads(metrics.read_text()).get("features")
        except json.JSONDecodeError:
            found = None
        if found:
            return Path(found)
    config_file, hydra_file = run_dir / ".hydra" / "config.yaml", run_dir / ".hydra" / "hydra.yaml"
    if not config_file.is_file():
        return None
    config = OmegaConf.load(config_file)
    # relative paths in the config start where the run was launched (recorded by Hydra)
    launched = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.cwd") \
        if hydra_file.is_file() else None
    base = Path(launched or run_dir)
    try:
        if config.get("features_path"):
            return absolute(config.features_path, base)
        return default_features_path(absolute(config.data_root, base), config.dataset.name, config.cnn.name)
    except Exception:  # an interpolation that cannot be resolved here (e.g. an unset env variable)
        return None


def _results_image_id(image_id: str) -> int | str:
    # COCO's own ids are integers, and coco-caption matches them by value.
    return int(image_id) if image_id.isdigit() else image_id


def evaluate(checkpoint: Path, features: Path | None = None, split: str = "test",
             decode: dict[str, Any] | None = None, output: Path | None = None,
             devices: int | str = 1, accelerator: str = "auto", strategy: str = "auto",
             batch_size: int = 256, spice: bool = False) -> dict[str, Any]:
    """Caption every image of `split` and score the captions; rank 0 writes the files."""
    module = load_module(checkpoint)
    given = features is not None
    features = Path(features) if given else _features_of_run(checkpoint)
    if features is None:
        raise FeaturesNotFoundError(
            f"{checkpoint}: its run folder records no features file (no metrics.json nor "
            ".hydra/config.yaml); pass --features <file.h5> (made by the same CNN as the checkpoint)")
    if not features.is_file():
        source = "" if given else " (the file the checkpoint's run trained on)"
        raise FeaturesNotFoundError(f"features file {features}{source} not found; pass --features "
                                    "<file.h5> (made by the same CNN as the checkpoint)")
    expected = module.hparams.get("encoder") or {}
    found = FeatureFile(features).encoder()
    # What makes features comparable; the dataset may differ (train on one, evaluate on another).
    differences = [f"{key}: checkpoint {expected[key]!r}, features {found.get(key)!r}"
                   for key in ENCODER_KEYS if key in expected and found.get(key) != expected[key]]
    if differences:
        raise CheckpointError(f"{features} was not made by the CNN this checkpoint was trained on: "
                              + "; ".join(differences))
    settings = {**(module.hparams.decode or {}), **(decode or {})}
    module.hparams.decode = settings
    module.hparams.spice = spice

    datamodule = CaptionDataModule(features, eval_batch_size=batch_size, vocabulary=module.vocabulary,
                                   max_caption_length=module.hparams.max_caption_length,
                                   val_split=split, test_split=split)
    trainer = pl.Trainer(accelerator=accelerator, devices=devices, strategy=strategy, logger=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    scores = module.last_scores["test"]  # float64, as coco-caption computed them
    captions = module.last_captions["test"]
    image_ids = datamodule.features.image_ids
    summary = {"checkpoint": str(checkpoint), "features": str(features), "split": split,
               "decode": settings, "images": len(captions), "scores": scores}
    if trainer.is_global_zero:
        output = Path(output) if output else (
            Path(checkpoint).resolve().parent.parent / "evaluations" / f"{split}-{settings['strategy']}")
        output.mkdir(parents=True, exist_ok=True)
        results = [{"image_id": _results_image_id(image_ids[index]), "caption": captions[index]}
                   for index in sorted(captions)]
        write_atomically(output / "results.json", json.dumps(results, indent=1))
        write_atomically(output / "scores.json", json.dumps(summary, indent=1))
        summary["output"] = str(output)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m captioner.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a .ckpt file from a run's checkpoints/")
    parser.add_argument("--features", type=Path, help="HDF5 features (default: the run's own file)")
    parser.add_argument("--split", default="test", help="any split of the features file (default: test)")
    add_decode_arguments(parser)
    parser.add_argument("--output", type=Path, help="folder for scores.json and results.json "
                        "(default: <run>/evaluations/<split>-<decode>)")
    parser.add_argument("--devices", default="1", help="number of devices; >1 runs Lightning DDP")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--spice", action="store_true", help="also SPICE, where it can run (Java 8, CoreNLP)")
    args = parser.parse_args(argv)

    decode = decode_overrides(args)
    devices = int(args.devices) if args.devices.isdigit() else args.devices
    torch.set_float32_matmul_precision("high")
    try:
        summary = evaluate(args.checkpoint, args.features, args.split, decode, args.output, devices=devices,
                           accelerator=args.accelerator,
                           strategy="ddp" if isinstance(devices, int) and devices > 1 else "auto",
                           batch_size=args.batch_size, spice=args.spice)
    except (*user_errors(), FileNotFoundError, ValueError) as error:  # e.g. a --split the file lacks
        exit_for_user_error(error, parser.prog)
    if "output" in summary:
        shown = " ".join(f"{name}={value:.3f}" for name, value in summary["scores"].items())
        print(f"{summary['split']} ({summary['images']} images, {summary['decode']['strategy']}): {shown}")
        print(f"wrote {summary['output']}/scores.json and results.json")


if __name__ == "__main__":
    main()
