"""Train and score a captioner: `captioner-train [-m] dataset=... cnn=... rnn=... key=value` (installed),
or `python train.py ...` in a checkout, or `python -m captioner.train ...`; the configs are the
package's own (captioner/conf/), and `--config-dir DIR` adds a user's own.

Exit status (README "Exit codes"): 0 every run completed; 1 a run failed (a sweep: any run);
2 a user error (bad option, missing or malformed file), one line saying what to fix;
128 + N preempted by signal N (143: SIGTERM) after saving a checkpoint to resume from.
"""

import logging
import os

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from captioner.launch.unique_folders import register_resolver

log = logging.getLogger("train")
# Inherited by launcher workers: DDP ranks started inside a job run this module (the variable is
# launch/ddp_under_hydra.py's ENTRY_POINT; importing that module here would load Lightning before
# Hydra sets up logging, and slow down --help).
os.environ["CAPTIONER_ENTRY_POINT"] = "captioner.train"
register_resolver()  # ${unique_dir:...} in conf/train.yaml's run folders
_job_started = False  # Hydra exits 1 on its own errors (bad override, unknown group) before the job


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    global _job_started
    _job_started = True
    from captioner.errors import UserError, exit_for_user_error, verbose
    from captioner.records.sweep_runs import sweep_group
    from captioner.runs.run import run  # after Hydra parsed the command line: --help stays fast

    hydra_cfg = HydraConfig.get()
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        summary = run(cfg, run_dir=hydra_cfg.runtime.output_dir,
                      overrides=list(hydra_cfg.overrides.task), base_dir=hydra_cfg.runtime.cwd,
                      group=sweep_group(cfg.sweep_name, hydra_cfg.sweep.dir) if sweep else None,
                      in_sweep=sweep, config_name=hydra_cfg.job.config_name)
    except Exception as error:  # not Preempted (a SystemExit): a preempted sweep stops here
        expected = isinstance(error, UserError)
        if not sweep:
            if expected and not verbose():
                exit_for_user_error(error, "train.py")
            raise  # Hydra prints it and exits 1
        # One failing run must not sink the sweep: its metrics.json says why, the report marks it.
        if expected and not verbose():
            log.error("run %s failed: %s", hydra_cfg.runtime.output_dir, error)
        else:
            log.exception("run %s failed", hydra_cfg.runtime.output_dir)
        return None  # a failed trial for Optuna (float(None) fails: told FAIL; NaN made optuna 2 raise)
    return summary.best_val_cider  # what a sweeper (e.g. Optuna) maximises


def cli() -> None:
    from captioner.errors import run_hydra_app

    run_hydra_app(main, lambda: _job_started)


if __name__ == "__main__":
    cli()
