"""`python -m captioner.prepare [-m] dataset=... cnn=...`: extract features without training.

The same Hydra config as train.py (`-m` with comma lists prepares several files); the policy,
reuse or extract, is captioner/features/cache.py's.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from captioner.errors import UserError, exit_for_user_error, run_hydra_app, verbose
from captioner.launch.unique_folders import register_resolver

register_resolver()  # ${unique_dir:...} in conf/train.yaml's run folders
_job_started = False  # see errors.run_hydra_app


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    global _job_started
    _job_started = True
    from captioner.features.cache import prepare  # after Hydra parsed the command line
    from captioner.features.feature_file import FeatureFile
    from captioner.features.weights_source import WeightsSource
    from captioner.settings import read_settings

    try:
        settings = read_settings(cfg, Path(HydraConfig.get().runtime.cwd))
        # The explicit command reads a file it reuses whole: damage is found now, not in a batch.
        records, path = prepare(settings, verify=True)
    except UserError as error:
        if verbose() or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        exit_for_user_error(error, "captioner.prepare")
    features = FeatureFile(path)
    weights = WeightsSource.from_dict(features.identity["weights"]).label()
    print(f"{path}: {features.num_images} images ({len(records)} records), "
          f"{features.regions} regions x {features.channels} channels, "
          f"{len(features.skipped)} skipped, weights {weights}")


def cli() -> None:
    """`captioner-prepare` (installed) and `python -m captioner.prepare`."""
    run_hydra_app(main, lambda: _job_started)


if __name__ == "__main__":
    cli()
