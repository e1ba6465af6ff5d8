"""A Hydra callback: before a run starts in a folder that holds an earlier run (a resume in
place, `hydra.run.dir=<that folder> ckpt_path=last`, or a sweep run again in its folder), keep a
copy of that run's `.hydra/`.

Hydra rewrites `.hydra/` before the job starts; if `run()` then finds that the resume cannot go on
(a changed model, a damaged checkpoint), it puts the copy back, so the folder is as it was. A
sweep's jobs have their `.hydra/` written before any per-job callback, so the sweep's command
copies every earlier run's before its first job; each job drops or puts back its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from captioner.records.run_folder import RunFolder


class KeepEarlierRunConfig(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pytorch_lightning.utilities import rank_zero_only

        # DDP's other ranks start this command again in the same folder: one copy, by rank 0 (with
        # three or more ranks, copies and removals raced and could leave a stray backup)
        if rank_zero_only.rank == 0:
            RunFolder(config.hydra.run.dir).back_up_config()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            for folder in RunFolder.all_under(sweep_dir):
                folder.back_up_config()
