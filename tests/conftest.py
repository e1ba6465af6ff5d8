"""Shared fixtures: tiny shapes datasets and configs composed from the real conf/ tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"

os.environ.setdefault("WANDB_MODE", "offline")

# A small, fast configuration: 60 scenes, a 64 px VGG16 grid (4x4x512), a small decoder.
TINY = [
    "dataset.num_images=60",
    "dataset.image_size=64",
    "cnn=vgg16",
    "cnn.input_size=64",
    "cnn.batch_size=16",
    "num_workers=0",
    "model.embed_dim=32",
    "model.hidden_dim=64",
    "model.attention_dim=32",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "examples=2",
]


def compose_config(*overrides: str, data_root: Path | None = None, dataset: str = "shapes") -> DictConfig:
    """The real config with TINY's overrides; a real `dataset` gets a random CNN (no download)."""
    tiny = TINY if dataset == "shapes" else [
        f"dataset={dataset}", "cnn.weights=null",
        *(o for o in TINY if not o.startswith("dataset."))]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*tiny, *overrides])
    if data_root is not None:
        with open_dict(cfg):
            cfg.data_root = str(data_root)
            if dataset == "shapes":
                cfg.dataset.root = str(data_root / cfg.dataset.name)
    return cfg


@pytest.fixture(scope="session")
def shared_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data root for tests that only read: its shapes images and features are made once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def tiny_cfg(shared_data_root: Path) -> DictConfig:
    return compose_config(data_root=shared_data_root)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run (random VGG16 features, 4 epochs), for tests that load its checkpoint.

    70 scenes: 7 test images, an odd count, so a 2-process distributed sampler pads one rank.
    """
    from captioner.train import run

    root = tmp_path_factory.mktemp("trained")
    cfg = compose_config("dataset.num_images=70", "trainer.max_epochs=4", data_root=root / "data")
    run(cfg, run_dir=root / "run", base_dir=root)
    return root / "run"
