"""Checkpoint callbacks whose record survives a resume into another run folder.

Lightning restores a ModelCheckpoint's best score only when the checkpoint was written to the same
folder. A resume into a new folder (`ckpt_path=<earlier run>/checkpoints/last.ckpt`, or `last`
found in an earlier run) kept only the earlier best's path: the first validation after the
resume then counted as the best whatever it scored, and the test, `best_val_cider` and the
self-critical stage's start came from it. Here the earlier best file is linked (or copied) into
the new folder and its score kept, so the best is chosen over all epochs as in an uninterrupted
run, and a better epoch later replaces only the new folder's file, never the earlier run's. An
unmonitored one (last.ckpt) has nothing to carry over.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint

from captioner.paths import staged

log = logging.getLogger(__name__)


def link_or_copy(source: Path, target: Path) -> None:
    """`target` with `source`'s content: a hard link where the file system allows one, else a copy;
    through this writer's own staging name, so DDP ranks doing the same at once do not collide."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with staged(target) as staging:
        try:
            os.link(source, staging)
        except OSError:  # another file system, or one without hard links
            shutil.copy2(source, staging)
        os.replace(staging, target)


class ResumableCheckpoint(ModelCheckpoint):
    @property
    def state_key(self) -> str:
        """ModelCheckpoint's key, so checkpoints written before this class still resume their best."""
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        earlier_dir = state_dict.get("dirpath")
        earlier = Path(state_dict.get("best_model_path") or "")
        score = state_dict.get("best_model_score")
        if earlier_dir in (None, self.dirpath) or self.dirpath is None:
            super().load_state_dict(state_dict)
            return
        if score is None:  # unmonitored, or no validation yet: nothing to choose among
            return
        here = Path(self.dirpath) / earlier.name
        if earlier.is_file():
            link_or_copy(earlier, here)
        elif not here.is_file():  # (found here: the run folder was moved, and resumed where it is now)
            log.warning("the earlier run's best checkpoint %s is gone: the best is chosen among the "
                        "epochs from here on", earlier)
            super().load_state_dict({**state_dict, "dirpath": self.dirpath, "best_model_path": "",
                                     "best_model_score": None, "best_k_models": {},
                                     "kth_best_model_path": "", "last_model_path": ""})
            return
        super().load_state_dict({**state_dict, "dirpath": self.dirpath, "best_model_path": str(here),
                                 "best_k_models": {str(here): score}, "kth_best_model_path": str(here),
                                 "kth_value": score, "last_model_path": ""})
