"""The Flickr8k benchmark: train with the shared MobileNetV2, select on dev, score
dev and test with greedy decoding and beam 3.

    python benchmarks/flickr8k.py [extra overrides ...]     # from anywhere; runs in the repo root

It runs `python train.py experiment=flickr8k_mobilenet [overrides]` (the checkpoint with the best
dev CIDEr-D, greedy, is kept), then `captioner.evaluate` on that checkpoint for dev and test, greedy
and beam 3 (the experiment's length penalty), and prints one table: BLEU-1..4, METEOR, ROUGE-L,
CIDEr-D per split and decoding, epochs, wall time, peak memory. Features are extracted once into
`<data_root>/features/` (data_root: ./data or $CAPTIONER_DATA_ROOT) and reused by later runs.
Target: under 60 minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from table import last_extraction_rate, machine_row, peak_child_rss_mib, print_table

REPO = Path(__file__).resolve().parent.parent
METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")


def main(overrides: list[str]) -> None:
    run_dir = REPO / "outputs" / "flickr8k" / time.strftime("%Y-%m-%d_%H-%M-%S")
    command = ["train.py", "experiment=flickr8k_mobilenet", *overrides]
    began = time.perf_counter()
    result = subprocess.run([sys.executable, *command, f"hydra.run.dir={run_dir}"], cwd=REPO)
    train_wall = time.perf_counter() - began
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if result.returncode != 0 or metrics.get("status") != "completed":
        sys.exit(f"train.py failed ({metrics.get('error')}); see {run_dir}")

    sys.path.insert(0, str(REPO))
    from captioner.inference.evaluate import evaluate

    checkpoint = Path(metrics["checkpoint"])
    beam = {"strategy": "beam", "beam_size": 3}
    scores, eval_began = {}, time.perf_counter()
    for split, name in (("val", "dev"), ("test", "test")):
        for decode, settings in (("greedy", {"strategy": "greedy"}), ("beam 3", beam)):
            summary = evaluate(checkpoint, split=split, decode=settings,
                               output=run_dir / "evaluations" / f"{split}-{decode.replace(' ', '')}")
            scores[f"{name} {decode}"] = summary["scores"]
            length_penalty = summary["decode"].get("length_penalty", 0.0)
    eval_wall = time.perf_counter() - eval_began

    peak_mib = max(peak_child_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    log_text = "".join(p.read_text(errors="replace") for p in run_dir.glob("*.log"))
    history = metrics["history"] or [{"epoch": None}]
    best_epoch = max(history, key=lambda e: e.get("cider", -1.0))["epoch"]
    header = " / ".join(("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"))
    rows = [
        machine_row(),
        ("command", "python " + " ".join(command)),
        ("run folder", str(run_dir.relative_to(REPO))),
        ("epochs", f"{metrics['epochs']} trained, best dev CIDEr-D (greedy) at epoch {best_epoch}"),
        ("wall time", f"{train_wall + eval_wall:.0f} s (train.py {train_wall:.0f} s, of which fit "
                      f"{metrics['train_time_s']:.0f} s; the four evaluations {eval_wall:.0f} s)"),
        ("extraction rate", last_extraction_rate(log_text).replace("n/a", "n/a (features reused)")),
        ("peak RSS", f"{peak_mib:.0f} MiB"),
        ("beam length penalty", f"{length_penalty}"),
        ("scores", header),
        *((key, " / ".join(f"{value[m]:.3f}" for m in METRICS)) for key, value in scores.items()),
    ]
    print_table(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
