"""Parallel runs on one machine lease different GPUs (file locks; no GPU needed to test them)."""

from __future__ import annotations

import threading
import time

import pytest

from captioner.launch.gpu_lease import lease, lease_for_run


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


def test_cpu_runs_lease_nothing():
    with lease_for_run("cpu", 1) as gpus:
        assert gpus is None
