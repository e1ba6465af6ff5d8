"""What a user gives wrong (a CNN, its weights, an SCST checkpoint or setting) is a `UserError` that
names the option or file and the fix, and train.py turns it into one line and exit 2."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torchvision

from captioner.data.vocabulary import SPECIALS
from captioner.errors import USER_ERROR, ConfigError, UserError
from captioner.features.backbones import UnknownWeightsError, WeightsFileError, build_backbone, weights_source
from captioner.training.checkpoint_loading import CheckpointError, CheckpointNotFoundError
from captioner.training.module import CaptionModule
from captioner.training.self_critical import CiderReward, SelfCritical
from captioner.training.self_critical_stage import _load_weights
from tests.conftest import cnn_settings, command, train_command

# --- the CNN and its weights ---


def test_package_weights_for_a_cnn_no_package_ships_say_what_to_choose():
    cnn = cnn_settings("vgg16", weights="package")
    for call in (weights_source, build_backbone):
        with pytest.raises(UnknownWeightsError) as raised:
            call(cnn)
        assert isinstance(raised.value, UserError) and isinstance(raised.value, ValueError)
        message = str(raised.value)
        assert message.startswith("cnn.weights=package: no package ships vgg16 weights")
        assert "efficientnet_lite2" in message  # the one that has package weights
        assert "cnn.weights_path" in message and "cnn.weights=null" in message


def test_an_unknown_cnn_is_a_config_error_listing_the_known_ones():
    cnn = dataclasses.replace(cnn_settings("vgg16"), name="vgg17")
    with pytest.raises(ConfigError, match=r"cnn.name='vgg17': unknown cnn; choose cnn= one of .*vgg16"):
        build_backbone(cnn)


def test_an_unknown_torchvision_weights_name_lists_the_ones_there_are():
    with pytest.raises(UnknownWeightsError) as raised:
        build_backbone(cnn_settings("vgg16", weights="IMAGENET9K"))
    message = str(raised.value)
    assert message.startswith("cnn.weights='IMAGENET9K' is not a weight of VGG16_Weights")
    assert "IMAGENET1K_V1" in message and "cnn.weights=null" in message


def _weights_error(path: Path, name: str = "mobilenet_v2") -> str:
    with pytest.raises(WeightsFileError) as raised:
        build_backbone(cnn_settings(name, weights=None, weights_path=path))
    assert isinstance(raised.value, UserError) and isinstance(raised.value, ValueError)
    return str(raised.value)


def test_a_weights_file_that_is_no_state_dict_names_the_file_and_the_fix(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    message = _weights_error(garbage)
    assert message.startswith(f"{garbage}: not a loadable state dict")
    assert "torch.save(model.state_dict(), path)" in message and "cnn.weights_path" in message

    a_list = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], a_list)
    message = _weights_error(a_list)
    assert message.startswith(f"{a_list}: not a state dict but a list")
    assert "point cnn.weights_path at a state dict of mobilenet_v2" in message


@pytest.mark.parametrize("other, why", [
    (lambda: torchvision.models.resnet18(weights=None), "missing"),  # other tensor names
    (lambda: torchvision.models.mobilenet_v3_small(weights=None), "size mismatch"),  # same names
])
def test_a_weights_file_of_another_architecture_is_a_user_error(tmp_path, other, why):
    path = tmp_path / "other.pth"
    torch.save(other().state_dict(), path)
    message = _weights_error(path)
    assert message.startswith(f"{path}: not mobilenet_v2 weights") and why in message
    assert "or choose the cnn= whose architecture made this file" in message


# --- self-critical training ---


def _module(hidden_dim: int = 16) -> CaptionModule:
    return CaptionModule(vocabulary=[*SPECIALS, "a", "red", "circle"], feature_dim=8, embed_dim=8,
                         hidden_dim=hidden_dim, attention_dim=8, meteor=False)


def test_a_missing_scst_checkpoint_is_named_with_the_fix(tmp_path):
    missing = tmp_path / "nowhere" / "xe.ckpt"
    with pytest.raises(CheckpointNotFoundError) as raised:
        _load_weights(_module(), missing, "scst.from_checkpoint")
    assert isinstance(raised.value, UserError) and isinstance(raised.value, FileNotFoundError)
    message = str(raised.value)
    assert message.startswith(f"scst.from_checkpoint: no such checkpoint file ({missing})")
    assert "cross-entropy .ckpt of this model" in message and "null" in message


def test_an_scst_checkpoint_of_another_model_or_no_checkpoint_at_all_is_named(tmp_path):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": _module(hidden_dim=32).state_dict()}, other)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    for path in (other, garbage):
        with pytest.raises(CheckpointError) as raised:
            _load_weights(_module(), path, "scst.from_checkpoint")
        assert isinstance(raised.value, UserError)
        message = str(raised.value)
        assert message.startswith(f"scst.from_checkpoint={path}: not a checkpoint of this model")
        assert "must match this run's config" in message
    same = tmp_path / "same.ckpt"
    torch.save({"state_dict": _module().state_dict()}, same)
    _load_weights(_module(), same, "scst.from_checkpoint")  # the right one loads


def test_bad_scst_settings_are_config_errors():
    reward = CiderReward({0: ["a red circle"]}, _module().vocabulary)
    with pytest.raises(ConfigError, match=r"scst.baseline='best': expected one of .*greedy"):
        SelfCritical(reward, baseline="best")
    with pytest.raises(ConfigError, match=r"scst.baseline=mean needs scst.samples >= 2 .*baseline=greedy"):
        SelfCritical(reward, samples=1, baseline="mean")


# --- through train.py: one line on stderr, exit 2 ---


def _one_line_exit_2(tmp_path: Path, *overrides: str) -> str:
    result = command(tmp_path, train_command(tmp_path / "data", *overrides), check=False)
    assert result.returncode == USER_ERROR, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: "), result.stderr[-3000:]
    return lines[0]


def test_train_py_exits_2_for_package_weights_on_vgg16(tmp_path):
    line = _one_line_exit_2(tmp_path, "cnn.weights=package")
    assert "cnn.weights=package" in line and "vgg16" in line
    assert not (tmp_path / "data" / "features").exists()  # found before any extraction


def test_train_py_exits_2_for_a_weights_file_that_is_no_state_dict(tmp_path):
    # found while the features are extracted, after the run started: still a user error
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    line = _one_line_exit_2(tmp_path, f"cnn.weights_path={garbage}")
    assert f"{garbage}: not a loadable state dict" in line and "cnn.weights_path" in line


def test_a_sweep_job_the_launcher_lost_is_exit_1_not_a_command_line_error():
    # Hydra exits 1 over submitit's error for a job killed by the scheduler (out of memory, out
    # of time): that is not the command line's fault, which exits 2.
    import sys

    from captioner.errors import run_hydra_app

    class UncompletedJobError(RuntimeError):
        pass

    UncompletedJobError.__module__ = "submitit.core.utils"

    def lost_job():
        try:
            raise UncompletedJobError("job 3 has not produced any output (state: OUT_OF_MEMORY)")
        except RuntimeError:
            sys.exit(1)  # as Hydra's run_and_report

    def bad_override():
        sys.exit(1)

    for main, code in ((lost_job, 1), (bad_override, 2)):
        with pytest.raises(SystemExit) as ended:
            run_hydra_app(main, lambda: False)
        assert ended.value.code == code
