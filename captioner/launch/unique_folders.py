"""Run folders that two runs never share: `${unique_dir:outputs/<date>/<time>}` in conf/train.yaml.

Hydra names a run's folder by the second it started, so two runs started in the same second (two
terminals, a shell loop, a job array) would write into one folder. The resolver claims the folder
with an atomic `mkdir` and, when another run has it, takes `<time>-1`, `<time>-2`, ... A folder the
user names (`hydra.run.dir=outputs/fixed`, to resume in place) is used as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

RESOLVER = "unique_dir"
_claimed: dict[str, str] = {}  # Hydra resolves the run folder more than once per process


def claim_folder(base: str) -> str:
    """`base`, or the first free `base-N`, created now so no other process can take it."""
    if base in _claimed:
        return _claimed[base]
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(10_000):
        candidate = base if attempt == 0 else f"{base}-{attempt}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        _claimed[base] = candidate
        return candidate
    raise RuntimeError(f"{base}: 10000 run folders of the same second already exist")


def register_resolver() -> None:
    """Before Hydra composes the config (train.py and captioner.prepare import this)."""
    if not OmegaConf.has_resolver(RESOLVER):
        # use_cache: a multirun's jobs copy the master's cache, so they all see the sweep's one folder
        OmegaConf.register_new_resolver(RESOLVER, claim_folder, use_cache=True)
