"""Train and score a captioner: `python train.py [-m] dataset=... cnn=... rnn=... key=value`."""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from captioner.train import run  # after Hydra parsed the command line: --help stays fast

    hydra_cfg = HydraConfig.get()
    summary = run(cfg, run_dir=hydra_cfg.runtime.output_dir,
                  overrides=list(hydra_cfg.overrides.task), base_dir=hydra_cfg.runtime.cwd)
    return summary.get("best_val_cider")  # what a sweeper (e.g. Optuna) maximises


if __name__ == "__main__":
    main()
