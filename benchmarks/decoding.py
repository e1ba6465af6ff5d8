"""Greedy against beam search on a trained checkpoint's test split, and batched beam search
against one image at a time: `python benchmarks/decoding.py RUN_DIR [beam_size]`.

RUN_DIR is a finished run (its metrics.json names the checkpoint and the features file).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from table import print_table  # benchmarks/ is on sys.path when run as a script

from captioner.features.feature_file import FeatureFile
from captioner.model.decoding import GREEDY, DecodeOptions
from captioner.scoring.coco_metrics import score_captions
from captioner.training.module import CaptionModule


def main(run_dir: Path, beam_size: int) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    module = CaptionModule.load_from_checkpoint(metrics["checkpoint"], map_location="cpu").eval()
    beam = DecodeOptions("beam", beam_size=beam_size)
    features = FeatureFile(metrics["features"])
    images = features.splits["test"]
    batch = torch.from_numpy(features.read(images)).float()
    references = features.references("test")

    def decode(strategy: str, rows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(rows, beam if strategy == "beam" else GREEDY)[0]

    rows = [("machine", f"x86_64 CPU, torch threads: {torch.get_num_threads()}"),
            ("test images", str(len(images)))]
    for strategy in ("greedy", "beam"):
        began = time.perf_counter()
        tokens = decode(strategy, batch)
        elapsed = time.perf_counter() - began
        texts = {int(i): module.vocabulary.decode(t.tolist()) for i, t in zip(images, tokens, strict=True)}
        scores = score_captions(texts, references)
        label = strategy if strategy == "greedy" else f"beam {beam_size}"
        rows += [(f"{label}: time, batched", f"{elapsed:.2f} s"),
                 (f"{label}: BLEU-4 / CIDEr-D", f"{scores['bleu4']:.3f} / {scores['cider']:.3f}")]
    began = time.perf_counter()
    for i in range(len(batch)):
        decode("beam", batch[i:i + 1])
    alone = time.perf_counter() - began
    rows.append((f"beam {beam_size}: time, one image at a time", f"{alone:.2f} s"))
    print_table(rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 5)
