"""CNN backbones that turn a normalised (B, 3, S, S) image batch into its last convolutional
grid (B, C, h, w), one builder per architecture, with their weights.

Each grid network keeps the full model's parameter names, so a full-model state dict
(`cnn.weights_path`) loads into it directly and the layers after the grid are simply ignored.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from captioner.errors import ConfigError, UserError
from captioner.features.efficientnet_lite2 import TIMM_MODEL, efficientnet_lite2, packaged_weights, timm_names
from captioner.features.weights_source import WeightsSource, file_sha256
from captioner.settings import CnnSettings
from captioner.settings.choices import TRAINABLE_BLOCKS

log = logging.getLogger(__name__)

INCEPTION_V3_LAYERS = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
)
RESNET_LAYERS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _children(net: nn.Module, names: tuple[str, ...]) -> nn.Sequential:
    return nn.Sequential(OrderedDict((name, getattr(net, name)) for name in names))


def inception_v3_grid(weights: Any) -> nn.Module:
    """InceptionV3 up to Mixed_7c: 299 px -> 8x8x2048. Expects (x - 0.5) / 0.5 input."""
    net = torchvision.models.inception_v3(weights=weights, aux_logits=weights is not None,
                                          init_weights=weights is None)
    return _children(net, INCEPTION_V3_LAYERS)


def vgg16_grid(weights: Any) -> nn.Module:
    """VGG16 conv5_3 before the last pooling: 224 px -> 14x14x512."""
    net = torchvision.models.vgg16(weights=weights)
    return nn.Sequential(OrderedDict(features=net.features[:-1]))


def resnet101_grid(weights: Any) -> nn.Module:
    """ResNet-101 up to layer4: 224 px -> 7x7x2048 (448 px -> 14x14)."""
    return _children(torchvision.models.resnet101(weights=weights), RESNET_LAYERS)


def mobilenet_v2_grid(weights: Any) -> nn.Module:
    """MobileNetV2's conv trunk (`features`, up to the 1x1 conv to 1280): 224 px -> 7x7x1280."""
    net = torchvision.models.mobilenet_v2(weights=weights)
    return nn.Sequential(OrderedDict(features=net.features))


class TimmGrid(nn.Module):
    """A timm model's `forward_features`: its last convolutional grid."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


def inception_resnet_v2_grid(weights: Any) -> nn.Module:
    """Inception-ResNet-v2 (timm): 299 px -> 8x8x1536. Expects (x - 0.5) / 0.5 input."""
    import timm

    name = "inception_resnet_v2" + (f".{weights}" if weights else "")
    return TimmGrid(timm.create_model(name, pretrained=weights is not None))


def efficientnet_lite2_grid(weights: Any) -> nn.Module:
    """EfficientNet-Lite2 (timm's tf_efficientnet_lite2): 260 px -> 9x9x1280 (conv_head after
    BN and ReLU6). Expects (x - 0.5) / 0.5 input. `weights="package"`: the pip package's file."""
    return TimmGrid(efficientnet_lite2(weights))


def grid_units(name: str, net: nn.Module) -> list[nn.Module]:
    """The grid network of `name` as modules run one after another (their composition is its
    forward); the last `TRAINABLE_BLOCKS[name]` of them are the blocks a trainable top can take,
    the CNN's final 1x1 head (MobileNetV2, EfficientNet) folded into the last one."""
    if name == "mobilenet_v2":
        features = list(net.features)
        return [*features[:-2], nn.Sequential(*features[-2:])]
    if name == "efficientnet_lite2":
        model = net.model
        stages = list(model.blocks)
        blocks = [block for stage in stages[:-1] for block in stage]
        return [model.conv_stem, model.bn1, *blocks, nn.Sequential(*stages[-1], model.conv_head, model.bn2)]
    if name == "vgg16":
        layers = list(net.features)  # conv, ReLU pairs; the last three convs with their ReLUs
        return [*layers[:-6], nn.Sequential(*layers[-6:-4]), nn.Sequential(*layers[-4:-2]),
                nn.Sequential(*layers[-2:])]
    if name == "resnet101":
        children = list(net.children())
        return [*children[:-1], *children[-1]]  # layer4's three bottlenecks
    if name == "inception_v3":
        return list(net.children())  # ..., Mixed_7a, Mixed_7b, Mixed_7c
    return [net]  # not split: no top blocks listed (TRAINABLE_BLOCKS[name] == 0)


def split_backbone(name: str, net: nn.Module, blocks: int) -> tuple[nn.Module, nn.Module | None]:
    """(bottom, top): the frozen part that makes the stored features and the last `blocks` blocks
    that train with the decoder; `blocks=0`: (net, None)."""
    if not blocks:
        return net, None
    units = grid_units(name, net)
    if blocks > TRAINABLE_BLOCKS.get(name, 0) or blocks >= len(units):
        raise ConfigError(f"cnn.trainable_blocks={blocks}: {name} lists {TRAINABLE_BLOCKS.get(name, 0)} "
                          "top blocks to train")
    return nn.Sequential(*units[:-blocks]).eval(), nn.Sequential(*units[-blocks:]).eval()


def top_skeleton(name: str, blocks: int) -> nn.Module:
    """The architecture of `name`'s last `blocks` blocks, randomly initialised: a checkpoint's
    fine-tuned weights are loaded into it."""
    _, top = split_backbone(name, _architecture(name).build(None), blocks)
    return top


def _same_names(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    return state


@dataclass(frozen=True)
class Architecture:
    build: Callable[[Any], nn.Module]  # weights (None = random) -> grid network
    weights_family: str  # torchvision enum class (`cnn.weights=IMAGENET1K_V1`) or "timm"
    # Weights installed with a Python package (`cnn.weights=package`): their file, checked.
    packaged_weights: Callable[[], Path] | None = None
    # A weights file's tensor names -> the network's (another implementation's names).
    file_names: Callable[[dict[str, torch.Tensor], Path], dict[str, torch.Tensor]] = _same_names
    timm_model: str | None = None  # timm's name of the network, where it is not the cnn= name


ARCHITECTURES: dict[str, Architecture] = {
    "inception_v3": Architecture(inception_v3_grid, "Inception_V3_Weights"),
    "vgg16": Architecture(vgg16_grid, "VGG16_Weights"),
    "resnet101": Architecture(resnet101_grid, "ResNet101_Weights"),
    "mobilenet_v2": Architecture(mobilenet_v2_grid, "MobileNet_V2_Weights"),
    "inception_resnet_v2": Architecture(inception_resnet_v2_grid, "timm"),
    "efficientnet_lite2": Architecture(efficientnet_lite2_grid, "timm", packaged_weights, timm_names,
                                       timm_model=TIMM_MODEL),
}
PACKAGED = "package"  # cnn.weights=package: the architecture's weights from an installed package


class WeightsNotFoundError(UserError, FileNotFoundError):
    """Pretrained weights that are neither in the cache nor at the path given."""


class UnknownWeightsError(ConfigError):
    """`cnn.weights` names weights the architecture does not have (a tag, or `package`)."""


class WeightsFileError(UserError, ValueError):
    """`cnn.weights_path` is a file, but not a state dict of the chosen architecture."""


def weights_source(cnn: CnnSettings) -> WeightsSource:
    """What the features depend on besides the architecture: where the weights come from."""
    arch = _architecture(cnn.name)
    if not cnn.weights_path and cnn.weights == PACKAGED:
        path = _packaged_weights(arch, cnn.name)
        return WeightsSource("package", path.name, sha256=file_sha256(path))
    return WeightsSource.of(cnn, arch.weights_family)


def _packaged_weights(arch: Architecture, name: str) -> Path:
    if arch.packaged_weights is None:
        with_package = sorted(n for n, a in ARCHITECTURES.items() if a.packaged_weights)
        raise UnknownWeightsError(
            f"cnn.weights=package: no package ships {name} weights (only {', '.join(with_package)}); "
            "choose a weights tag, a cnn.weights_path or cnn.weights=null")
    return arch.packaged_weights()


def _architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ConfigError(f"cnn.name={name!r}: unknown cnn; choose cnn= one of "
                          f"{', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


def build_backbone(cnn: CnnSettings) -> nn.Module:
    """The grid network of config `cnn` (name, weights, weights_path, seed) in eval mode."""
    arch = _architecture(cnn.name)
    seed = cnn.seed
    if cnn.weights_path:
        path = Path(cnn.weights_path).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"cnn.weights_path={path} does not exist; point it at a "
                                       f"{cnn.name} state dict (.pth)")
        torch.manual_seed(seed)
        net = arch.build(None)
        _load_state(net, cnn.name, arch.file_names(_read_state_dict(path), path), path)
        return net.eval()
    if cnn.weights is None:
        log.warning("cnn.weights=null: %s is randomly initialised (seed %d), not pretrained",
                    cnn.name, seed)
        torch.manual_seed(seed)
        return arch.build(None).eval()
    if cnn.weights == PACKAGED:
        _packaged_weights(arch, cnn.name)
        return arch.build(PACKAGED).eval()
    if arch.weights_family == "timm":
        return _pretrained_timm(arch, cnn)
    return _pretrained_torchvision(arch, cnn)


def _pretrained_torchvision(arch: Architecture, cnn: CnnSettings) -> nn.Module:
    try:
        enum = torchvision.models.get_weight(f"{arch.weights_family}.{cnn.weights}")
    except (ValueError, KeyError) as error:
        tags = [weights.name for weights in getattr(torchvision.models, arch.weights_family)]
        raise UnknownWeightsError(
            f"cnn.weights={cnn.weights!r} is not a weight of {arch.weights_family} ({error}); choose "
            f"one of {', '.join(tags)}, or set cnn.weights_path=<file> or cnn.weights=null") from error
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    try:
        return arch.build(enum).eval()
    except Exception as error:  # urllib/OSError from the download, hash mismatch, ...
        raise WeightsNotFoundError(
            f"could not load {arch.weights_family}.{cnn.weights} for cnn={cnn.name} ({error}). "
            f"Download {enum.url} and put it at {cached} (the torch hub cache, see TORCH_HOME), "
            f"or set cnn.weights_path=<file>, or cnn.weights=null for random weights") from error


def _pretrained_timm(arch: Architecture, cnn: CnnSettings) -> nn.Module:
    try:
        return arch.build(cnn.weights).eval()
    except Exception as error:  # no network, not in the Hugging Face cache, unknown tag, ...
        hub = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
        model = f"{arch.timm_model or cnn.name}.{cnn.weights}"
        folder = hub / f"models--timm--{model}"
        raise WeightsNotFoundError(
            f"could not load timm weights {model} ({error}). timm reads them from "
            f"the Hugging Face cache, {folder}/snapshots/<revision>/model.safetensors (the hub "
            f"repository timm/{model}); offline, download model.safetensors and set "
            "cnn.weights_path=<file>, or cnn.weights=null for random weights") from error


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file; never runs pickled code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as error:  # a truncated or corrupt file: SafetensorError names no file
            raise WeightsFileError(f"{path}: not a loadable safetensors file ({error}); download it "
                                   "again, or point cnn.weights_path at another file") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a pickled whole model, a TorchScript archive, a truncated file, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsFileError(f"{path}: not a loadable state dict ({first}); save one with "
                         "torch.save(model.state_dict(), path) and point cnn.weights_path at it") from error


def _load_state(net: nn.Module, name: str, state: dict, path: Path) -> None:
    """Load a full-model state dict into the grid network; layers past the grid are ignored."""
    target = net.model if isinstance(net, TimmGrid) else net
    fix = (f"point cnn.weights_path at a state dict of {name} (e.g. torch.save(model.state_dict(), "
           "path)), or choose the cnn= whose architecture made this file")
    if not isinstance(state, dict):
        raise WeightsFileError(f"{path}: not a state dict but a {type(state).__name__}; {fix}")
    try:
        missing, _ = target.load_state_dict(state, strict=False)
    except RuntimeError as error:  # the same names with other shapes: a sibling architecture
        mismatch = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line),
                        str(error).splitlines()[0])
        raise WeightsFileError(f"{path}: not {name} weights ({mismatch}); {fix}") from None
    if missing:
        raise WeightsFileError(f"{path}: not {name} weights, missing {len(missing)} tensors "
                         f"(first: {missing[0]}); {fix}")


def calibrate_random_network(net: nn.Module, images: torch.Tensor, batch_size: int = 32) -> str:
    """Data-dependent initialisation of a randomly initialised network from `images`.

    A deep random ReLU network maps every image to nearly the same grid (random InceptionV3
    with identity BatchNorm: across-image std ~6% of the signal), so its features carry
    little. Normalising every layer on the dataset's own images keeps them apart:
    with BatchNorm layers, their statistics are estimated on `images`; without (VGG16), each
    convolution's weights and bias are rescaled so its outputs have zero mean and unit variance
    per channel (Kraehenbuehl et al. 2016). Returns what was done, for the file's attributes.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        if norms:
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None  # cumulative average over all calibration batches
            net.train()
            for start in range(0, len(images), batch_size):
                net(images[start:start + batch_size])
            net.eval()
            return f"batchnorm statistics from {len(images)} images"
        handles = [m.register_forward_hook(_standardise_conv_output)
                   for m in net.modules() if isinstance(m, nn.Conv2d)]
        try:
            net(images)  # layer by layer: each hook fixes its conv before the next one runs
        finally:
            for handle in handles:
                handle.remove()
        return f"conv outputs standardised on {len(images)} images"


def _standardise_conv_output(conv: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    mean = output.mean(dim=(0, 2, 3))
    std = output.std(dim=(0, 2, 3)) + 1e-5
    conv.weight.div_(std.view(-1, 1, 1, 1))
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros_like(mean))
    conv.bias.sub_(mean).div_(std)
    return (output - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
