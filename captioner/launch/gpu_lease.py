"""GPUs for runs that share a machine: each run leases free GPUs, so parallel runs never pile up.

Neither `parallel` nor submitit's local executor assigns GPUs to jobs (every job would use GPU 0),
so a run takes a file lock per GPU it uses and gives the GPUs back when it ends; a run that
finds no free GPU waits. DDP ranks 1..N-1 reuse rank 0's lease (passed in `LEASE_ENV`).

A lock is named after the physical GPU, not the run's index of it: two sweeps that see other
GPUs (one started with `CUDA_VISIBLE_DEVICES=1`, one without) must not both take "GPU 0".
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from captioner.errors import ConfigError

log = logging.getLogger(__name__)

LEASE_ENV = "CAPTIONER_LEASED_GPUS"
ALL_GPUS = -1  # Lightning's `devices=-1`


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"captioner-gpu-locks-{os.getuid()}"


def gpus_to_lease(count: int, available: int) -> int:
    """How many GPUs `trainer.devices=count` takes of the `available` ones (-1: all of them)."""
    wanted = available if count == ALL_GPUS else count
    if wanted < 1 or wanted > available:
        raise ConfigError(f"trainer.devices={count}: a run wants {wanted} GPUs but this machine has "
                          f"{available}; expected 1 to {available}, or -1 for all "
                          "(a run without GPUs: trainer.accelerator=cpu)")
    return wanted


def physical_gpu(slot: int, visible_devices: str | None) -> str:
    """The name of the GPU a process sees as `slot` under `CUDA_VISIBLE_DEVICES=visible_devices`,
    fit for a file name: its index on the machine, or its UUID / MIG id as the variable gives it."""
    if visible_devices is None:  # unset: the process sees every GPU, in the machine's order
        return str(slot)
    entries = [entry.strip() for entry in visible_devices.split(",")]
    if slot >= len(entries):  # not a GPU the process can see (CUDA counts only listed ones)
        return f"unlisted{slot}"
    entry = entries[slot]
    if re.fullmatch(r"\d+", entry):
        return str(int(entry))
    return re.sub(r"[^A-Za-z0-9_.-]", "_", entry)  # MIG ids hold slashes


@contextmanager
def lease(count: int, slots: Sequence[int], lock_dir: Path | None = None,
          poll_s: float = 5.0) -> Iterator[list[int]]:
    """Hold `count` of `slots` (visible GPU indices; -1: all of them) that no other run holds;
    wait while too few are free. Yields the visible indices held."""
    count = gpus_to_lease(count, len(slots))
    lock_dir = Path(lock_dir or default_lock_dir())
    lock_dir.mkdir(parents=True, exist_ok=True)
    visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    locks = {slot: FileLock(lock_dir / f"gpu{physical_gpu(slot, visible_devices)}.lock") for slot in slots}
    waited = False
    while True:
        with ExitStack() as held:
            taken = []
            for slot, lock in locks.items():
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


def requested_count(devices: object) -> int | None:
    """The number of GPUs `trainer.devices` asks for as Lightning reads it (-1: all; "auto" too,
    which Lightning gives every GPU), or None where it names the devices itself (a list, "0,1")."""
    if isinstance(devices, int):  # the settings refuse booleans
        return devices
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return ALL_GPUS
        if text.isdigit():
            return int(text)
    return None


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
    count = requested_count(devices)
    if (accelerator == "cpu" or count is None or "SLURM_JOB_ID" in os.environ
            or not torch.cuda.is_available()):
        yield None
        return
    with lease(count, range(torch.cuda.device_count())) as gpus:
        os.environ[LEASE_ENV] = ",".join(map(str, gpus))
        try:
            yield gpus
        finally:
            os.environ.pop(LEASE_ENV, None)
