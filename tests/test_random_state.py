"""The RNG states a checkpoint keeps (resumable_state.RandomState), alone and under DDP."""

from __future__ import annotations

import logging
import random
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from captioner.training.resumable_state import RandomState
from tests.conftest import on_two_ranks


def _draws() -> tuple[torch.Tensor, np.ndarray, float]:
    return torch.rand(3), np.random.rand(3), random.random()


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)


def test_random_state_round_trips_every_generator():
    state = RandomState()
    _seed_all(0)
    saved = state.state_dict()
    expected = _draws()
    _seed_all(9)
    state.load_state_dict(saved)
    again = _draws()
    assert torch.equal(again[0], expected[0]) and np.array_equal(again[1], expected[1])
    assert again[2] == expected[2]


def _save_and_resume_on_two_ranks(rank: int, address: str, found: Any, file: str) -> None:
    """One DDP rank (gloo): ranks whose generators differ save (rank 0 writes, as Lightning does),
    draw on, then resume from the file; each must draw again what it drew after the save."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=2)
    try:
        _seed_all(100 + rank)  # as after batches of other lengths on each rank
        state = RandomState()
        state.setup(SimpleNamespace(world_size=2), None, "fit")  # what it reads of its Trainer
        saved = state.state_dict()  # a collective: every rank saves
        if rank == 0:
            torch.save(saved, file)
        expected = _draws()
        dist.barrier()
        _seed_all(9)
        resumed = RandomState()
        resumed.setup(SimpleNamespace(world_size=2), None, "fit")  # Lightning sets up, then restores
        resumed.load_state_dict(torch.load(file, weights_only=True))  # every rank reads rank 0's file
        again = _draws()
        found.put((rank, torch.equal(again[0], expected[0]) and np.array_equal(again[1], expected[1])
                   and again[2] == expected[2]))
    finally:
        dist.destroy_process_group()


def test_under_ddp_each_rank_resumes_its_own_random_state(tmp_path):
    # Rank 0's states restored on every rank: rank 1 resumed drawing rank 0's numbers.
    resumed = on_two_ranks(_save_and_resume_on_two_ranks, str(tmp_path / "random_state.pt"))
    assert resumed == {0: True, 1: True}


def _alone_in_an_outside_group(rank: int, address: str, found: Any) -> None:
    """A process group made outside Lightning, each process with a Trainer of its own (one rank):
    a save must not gather across the group (saves at other times would hang)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=2)
    try:
        state = RandomState()
        state.setup(SimpleNamespace(world_size=1), None, "fit")
        if rank == 0:  # rank 1 never saves: a gather would wait for it forever
            found.put((rank, "ranks" not in state.state_dict()))
        else:
            found.put((rank, True))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_a_trainer_of_one_rank_inside_an_outside_process_group_saves_alone():
    assert on_two_ranks(_alone_in_an_outside_group) == {0: True, 1: True}


def test_a_resume_on_another_number_of_ranks_takes_rank_0s_states_and_says_so(caplog):
    _seed_all(5)
    rank_0 = RandomState().state_dict()
    expected = _draws()
    saved = {**rank_0, "ranks": [rank_0, {**rank_0, "torch": torch.zeros_like(rank_0["torch"])}]}
    with caplog.at_level(logging.WARNING):
        RandomState().load_state_dict(saved)  # one process resumes a 2-rank run
    assert torch.equal(torch.rand(3), expected[0])
    assert "random states are of 2 rank(s), this run has 1" in caplog.text
