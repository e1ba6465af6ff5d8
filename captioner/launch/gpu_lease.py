"""GPUs for runs that share a machine: each run leases free GPUs, so parallel runs never pile up.

Neither `parallel` nor submitit's local executor assigns GPUs to jobs (every job would use GPU 0),
so a run takes a file lock per GPU it uses and gives the GPUs back when it ends; a run that
finds no free GPU waits. DDP ranks 1..N-1 reuse rank 0's lease (passed in `LEASE_ENV`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

LEASE_ENV = "CAPTIONER_LEASED_GPUS"


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"captioner-gpu-locks-{os.getuid()}"


@contextmanager
def lease(count: int, slots: Sequence[int], lock_dir: Path | None = None,
          poll_s: float = 5.0) -> Iterator[list[int]]:
    """Hold `count` of `slots` (GPU indices) that no other run holds; wait while too few are free."""
    if count > len(slots):
        raise ValueError(f"a run wants {count} GPUs but this machine has {len(slots)}; "
                         "lower trainer.devices")
    lock_dir = Path(lock_dir or default_lock_dir())
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        with ExitStack() as held:
            taken = []
            for slot in slots:
                lock = FileLock(lock_dir / f"gpu{slot}.lock")
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue
                held.callback(lock.release)
                taken.append(slot)
                if len(taken) == count:
                    break
            if len(taken) == count:
                log.info("leased GPU(s) %s", taken)
                yield taken
                return
        if not waited:
            log.info("waiting for %d free GPU(s) (locks in %s)", count, lock_dir)
            waited = True
        time.sleep(poll_s)


@contextmanager
def lease_for_run(accelerator: str, devices: object) -> Iterator[list[int] | None]:
    """The GPU indices this run should use, or None to leave `trainer.devices` as configured.

    Leases only where it helps: CUDA present, a device *count* asked for (an explicit list is
    the user's choice), and not under SLURM (which gives each job its own GPUs).
    """
    import torch

    inherited = os.environ.get(LEASE_ENV)
    if inherited and os.environ.get("LOCAL_RANK", "0") != "0":  # a DDP rank started by rank 0
        yield [int(i) for i in inherited.split(",")]
        return
    if (accelerator == "cpu" or not isinstance(devices, int) or "SLURM_JOB_ID" in os.environ
            or not torch.cuda.is_available()):
        yield None
        return
    with lease(devices, range(torch.cuda.device_count())) as gpus:
        os.environ[LEASE_ENV] = ",".join(map(str, gpus))
        try:
            yield gpus
        finally:
            os.environ.pop(LEASE_ENV, None)
