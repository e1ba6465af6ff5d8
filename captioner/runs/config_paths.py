"""Every path option of the config made absolute, once, where a run or command starts.

Relative paths start where the user launched the command (Hydra does not change directory), so a
run's stages never resolve a path again and never disagree about where one points.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from captioner.paths import absolute

PATH_OPTIONS = ("data_root", "dataset.root", "features_path", "cnn.weights_path", "scst.from_checkpoint")


def with_absolute_paths(cfg: DictConfig, base_dir: Path) -> DictConfig:
    """A copy of `cfg` whose path options are absolute (`ckpt_path` too, unless it is `last`)."""
    resolved = cfg.copy()
    with open_dict(resolved):
        for key in (*PATH_OPTIONS, "ckpt_path"):
            value = OmegaConf.select(cfg, key, default=None)
            if value in (None, "") or (key == "ckpt_path" and value == "last"):
                continue
            OmegaConf.update(resolved, key, str(absolute(value, base_dir)), merge=False)
    return resolved
