"""Train and score a captioner: `python train.py [-m] dataset=... cnn=... rnn=... key=value`."""

import logging
import math
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger("train")
# Inherited by launcher workers: DDP ranks started inside a job re-run this file (ddp_under_hydra.py).
os.environ["CAPTIONER_ENTRY_POINT"] = str(Path(__file__).resolve())


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from captioner.train import run  # after Hydra parsed the command line: --help stays fast

    hydra_cfg = HydraConfig.get()
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        summary = run(cfg, run_dir=hydra_cfg.runtime.output_dir,
                      overrides=list(hydra_cfg.overrides.task), base_dir=hydra_cfg.runtime.cwd,
                      group=f"{cfg.sweep_name}-{Path(hydra_cfg.sweep.dir).name}" if sweep else None)
    except Exception:
        if not sweep:
            raise
        # One failing run must not sink the sweep: its metrics.json says why, the report marks it.
        log.exception("run %s failed", hydra_cfg.runtime.output_dir)
        return math.nan  # a failed trial for Optuna
    return summary.get("best_val_cider")  # what a sweeper (e.g. Optuna) maximises


if __name__ == "__main__":
    main()
