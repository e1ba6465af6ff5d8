"""How DataLoader worker processes are started, also inside a launcher's worker process."""

from __future__ import annotations

import multiprocessing
import sys
from multiprocessing.context import BaseContext


def worker_context(num_workers: int) -> BaseContext | None:
    """The platform's own start method, named explicitly.

    Inside a launcher's worker process (joblib's loky, which `hydra/launcher=parallel` used), the
    default context may be the launcher's, whose processes cannot run DataLoader workers (Hydra
    #964; AttributeError: 'Process' object has no attribute 'env').
    """
    if num_workers == 0:
        return None
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
