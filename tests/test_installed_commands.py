"""The installed commands work outside the checkout: `captioner-train` with the package's own
configs (and a user's own through `--config-dir`), and a non-editable install carries the configs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_COMMAND, command

BIN = Path(sys.executable).parent


def test_every_command_is_installed_beside_python():
    for name in ("captioner-train", "captioner-prepare", "captioner-caption", "captioner-evaluate",
                 "captioner-report"):
        assert (BIN / name).is_file(), f"{name} is not installed (pip install -e .)"


@pytest.mark.slow
def test_captioner_train_runs_outside_the_checkout_with_a_users_own_config_dir(tmp_path):
    work = tmp_path / "my_project"
    (work / "my_configs").mkdir(parents=True)
    # a user's own experiment over the package's configs: Hydra's --config-dir adds the folder
    (work / "my_configs" / "small.yaml").write_text(
        "defaults:\n  - train\n  - _self_\n\nmodel:\n  hidden_dim: 48\n")
    result = command(work, [str(BIN / "captioner-train"), "--config-dir", "my_configs", "--config-name",
                            "small", *[o for o in TINY_COMMAND if not o.startswith("model.hidden_dim")],
                            "data_root=data", "hydra.run.dir=outputs/run"])
    assert result.returncode == 0
    summary = json.loads((work / "outputs" / "run" / "metrics.json").read_text())
    assert summary["status"] == "completed" and summary["config"]["hidden_dim"] == 48
    # relative to where it started
    assert len(list((work / "data" / "features").glob("shapes-vgg16-*.h5"))) == 1
    assert not REPO.joinpath("my_configs").exists()


@pytest.mark.slow
def test_a_wheel_install_carries_the_configs_the_commands_compose(tmp_path):
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ there
    shutil.copytree(REPO / "captioner", source / "captioner", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    site = tmp_path / "site"
    command(tmp_path, [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                       "--target", str(site), str(source)], timeout=300)
    assert (site / "captioner" / "conf" / "train.yaml").is_file()
    assert (site / "captioner" / "conf" / "cnn" / "vgg16.yaml").is_file()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = command(outside, [sys.executable, "-m", "captioner.train", "--cfg", "job", "cnn=resnet101"],
                     env={"PYTHONPATH": str(site)})
    assert "name: resnet101" in result.stdout
    found = command(outside, [sys.executable, "-c", "import captioner; print(captioner.__file__)"],
                    env={"PYTHONPATH": str(site)})
    assert found.stdout.strip().startswith(str(site))  # the installed copy, not the checkout


def test_the_training_command_loads_no_lightning_before_hydra_sets_up_logging(tmp_path):
    """Lightning imported first adds its own stderr handler: every user error would then print
    Lightning's log lines above the one-line error (and --help would take seconds)."""
    script = ("import sys, captioner.train, captioner.prepare; "
              "print(sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))")
    result = command(tmp_path, [sys.executable, "-c", script])
    assert result.stdout.strip() == "[]"
