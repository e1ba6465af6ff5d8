"""The committed Flickr8k comparison (docs/flickr8k_cnn_rnn/), one run at a time.

    python benchmarks/flickr8k_comparison.py [--max-runs N] [--dry-run]

Runs the cells of `sweeps/flickr8k_cnn_rnn.yaml` (cnn x rnn x seed) that have no completed result
under `docs/flickr8k_cnn_rnn/runs/` yet, seed by seed (every cell's seed 0 first), each as a
one-run multirun of that sweep. After each run it keeps the run's small results (metrics.json,
captions.json with the per-image scores, .hydra/ with the overrides) in
`docs/flickr8k_cnn_rnn/runs/<nn>-<cnn>-<rnn>-seed<k>/` and rewrites the report from everything kept so
far, so the twelve runs (20-40 min each on a 2-core CPU) can span machine sessions: commit the
kept folder after each session. Checkpoints, features and figures stay under outputs/ and data/.

Regenerate the report anywhere, without training:
    python -m captioner.report docs/flickr8k_cnn_rnn --html-images 120
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SWEEP = REPO / "sweeps" / "flickr8k_cnn_rnn.yaml"
REPORT_DIR = REPO / "docs" / "flickr8k_cnn_rnn"
KEPT = REPORT_DIR / "runs"
KEPT_FILES = ("metrics.json", "captions.json", ".hydra/overrides.yaml", ".hydra/config.yaml")


def sweep_cells() -> list[dict[str, str]]:
    """The sweep's runs, seed-major: every (cnn, rnn) at seed 0, then seed 1, ..."""
    params = yaml.safe_load(SWEEP.read_text())["hydra"]["sweeper"]["params"]
    values = {key: str(value).split(",") for key, value in params.items()}
    seeds = values.pop("seed")
    return [dict(zip(values, combination, strict=True), seed=seed)
            for seed in seeds for combination in itertools.product(*values.values())]


def cell_name(cell: dict[str, str]) -> str:
    return "-".join(value for key, value in cell.items() if key != "seed") + f"-seed{cell['seed']}"


def kept_name(cell: dict[str, str]) -> str:
    """The kept folder: numbered in the sweep's order, which the report lists runs and levels in."""
    return f"{sweep_cells().index(cell):02d}-{cell_name(cell)}"


def is_kept(cell: dict[str, str]) -> bool:
    metrics = KEPT / kept_name(cell) / "metrics.json"
    return metrics.is_file() and json.loads(metrics.read_text()).get("status") == "completed"


def keep(run_dir: Path, cell: dict[str, str]) -> Path:
    """Copy the run's small results next to the report (into a new folder, then renamed into place)."""
    target = KEPT / kept_name(cell)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for name in KEPT_FILES:
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run_dir / name, staging / name)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def train(cell: dict[str, str]) -> Path:
    """One cell as a one-run multirun of the sweep (its overrides.yaml then names cnn, rnn, seed)."""
    started = time.strftime("%Y-%m-%d_%H-%M-%S")
    sweep_dir = REPO / "outputs" / "flickr8k_cnn_rnn" / f"{started}_{cell_name(cell)}"
    command = [sys.executable, "train.py", "-m", "--config-dir", "sweeps", "--config-name", SWEEP.stem,
               *(f"{key}={value}" for key, value in cell.items()), f"hydra.sweep.dir={sweep_dir}"]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=REPO, check=False)
    return sweep_dir / "0"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-runs", type=int, default=None, help="stop after this many runs")
    parser.add_argument("--dry-run", action="store_true", help="list the runs still missing and stop")
    args = parser.parse_args(argv)
    missing = [cell for cell in sweep_cells() if not is_kept(cell)]
    names = ", ".join(map(cell_name, missing)) or "none"
    print(f"{len(missing)} of {len(sweep_cells())} runs missing: {names}")
    if args.dry_run:
        return
    for cell in missing[:args.max_runs]:
        run_dir = train(cell)
        status = json.loads((run_dir / "metrics.json").read_text()).get("status") \
            if (run_dir / "metrics.json").is_file() else "missing"
        if status != "completed":  # one failed run does not stop the others; it stays missing
            print(f"{cell_name(cell)}: {status}; see {run_dir}", flush=True)
            continue
        print(f"kept {keep(run_dir, cell).relative_to(REPO)}", flush=True)
        subprocess.run([sys.executable, "-m", "captioner.report", str(REPORT_DIR), "--html-images", "120"],
                       cwd=REPO, check=False)


if __name__ == "__main__":
    main()
