"""Parallel runs on one machine lease different GPUs (file locks; no GPU needed to test them)."""

from __future__ import annotations

import tempfile
import threading
import time

import pytest
import torch

from captioner.errors import ConfigError
from captioner.launch.gpu_lease import lease, lease_for_run


@pytest.fixture(autouse=True)
def every_gpu_visible(monkeypatch):
    """Lock names follow CUDA_VISIBLE_DEVICES: tests start from a process that sees every GPU."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _lease_in_a_thread(count: int, slots, lock_dir, got: list[list[int]]) -> threading.Thread:
    """A lease taken and given back in a thread of its own (daemon: one that waits forever does
    not keep the tests from ending)."""
    def take() -> None:
        with lease(count, slots, lock_dir, poll_s=0.1) as gpus:
            got.append(gpus)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return thread


def test_concurrent_leases_get_different_gpus_and_a_third_waits(tmp_path):
    with lease(1, [0, 1], tmp_path) as first, lease(1, [0, 1], tmp_path) as second:
        assert first != second and sorted(first + second) == [0, 1]
        got: list[list[int]] = []

        def third() -> None:
            with lease(1, [0, 1], tmp_path, poll_s=0.05) as gpus:
                got.append(gpus)

        waiter = threading.Thread(target=third)
        waiter.start()
        time.sleep(0.3)
        assert not got  # both GPUs are taken
    waiter.join(timeout=5)
    assert got and got[0][0] in (0, 1)


def test_a_lease_of_two_takes_two_free_gpus(tmp_path):
    with lease(1, [0, 1, 2], tmp_path) as one, lease(2, [0, 1, 2], tmp_path) as two:
        assert len(two) == 2 and not set(one) & set(two)


def test_asking_for_more_gpus_than_exist_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="wants 3 GPUs but this machine has 2"), lease(3, [0, 1], tmp_path):
        pass


def test_minus_one_leases_every_gpu_at_once(tmp_path):
    # Before, devices=-1 (Lightning's "all GPUs") waited forever for len(taken) == -1.
    got: list[list[int]] = []
    _lease_in_a_thread(-1, range(2), tmp_path, got).join(timeout=5)
    assert got == [[0, 1]]


def test_zero_gpus_is_a_config_error_naming_trainer_devices_not_a_wait(tmp_path):
    got: list[list[int]] = []
    errors: list[BaseException] = []

    def take() -> None:
        try:
            with lease(0, [0, 1], tmp_path, poll_s=0.1) as gpus:
                got.append(gpus)
        except ConfigError as error:
            errors.append(error)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert not got and len(errors) == 1
    assert str(errors[0]).startswith("trainer.devices=0: ") and "trainer.accelerator=cpu" in str(errors[0])


def test_too_many_gpus_is_a_config_error_naming_trainer_devices(tmp_path):
    with pytest.raises(ConfigError, match=r"^trainer.devices=3: .* expected 1 to 2, or -1"), \
            lease(3, [0, 1], tmp_path):
        pass


def test_a_run_that_sees_one_gpu_and_one_that_sees_all_never_share_a_physical_gpu(tmp_path, monkeypatch):
    # Before, the locks were named by visible index: both runs locked "gpu0", the second then took
    # visible GPU 1, which is the first run's physical GPU 1.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with lease(1, range(1), tmp_path) as first:
        assert first == [0]  # the run is handed the index it sees
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
        with lease(1, range(2), tmp_path) as second:
            assert second == [0]  # physical GPU 1 is taken
        got: list[list[int]] = []
        waiter = _lease_in_a_thread(2, range(2), tmp_path, got)
        time.sleep(0.3)
        assert not got  # both physical GPUs would be needed
    waiter.join(timeout=5)
    assert got == [[0, 1]]


def test_gpus_named_by_uuid_or_mig_id_are_locked_by_that_name(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-GPU-5c3a/1/0")
    with lease(1, range(1), tmp_path):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-GPU-5c3a/2/0, MIG-GPU-5c3a/1/0")
        with lease(1, range(2), tmp_path) as other:
            assert other == [0]  # the MIG slice 1/0, visible here as 1, is held


def test_cpu_runs_lease_nothing():
    with lease_for_run("cpu", 1) as gpus:
        assert gpus is None


@pytest.mark.parametrize("devices", [-1, "-1", "auto"], ids=["int-minus-one", "text-minus-one", "auto"])
def test_a_run_that_asks_for_every_gpu_leases_every_gpu(tmp_path, monkeypatch, devices):
    # Lightning gives all GPUs to each of these: the lease must hold them all, not wait forever
    # (-1) nor hold none, so that a parallel run piles onto the same GPUs ("auto", "-1").
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the lock folder: this test's own
    for name in ("SLURM_JOB_ID", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    got: list[list[int] | None] = []

    def run() -> None:
        with lease_for_run("auto", devices) as gpus:
            got.append(gpus)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert got == [[0, 1]]
