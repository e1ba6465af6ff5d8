"""conf/cnn/: each option extends conf/cnn_base.yaml (the keys every CNN shares, written once) and
composes to the same `cnn` section as when every file spelled them out; a dataset's or an
experiment's `cnn:` values still win; the base is not offered as a cnn option."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from tests.conftest import CONF

SHARED = {"weights_path": None, "seed": 0, "calibration_images": 64, "batch_size": 32, "num_workers": 2,
          "decode": "auto", "trainable_blocks": 0}
IMAGENET_MEAN_STD = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
HALF_MEAN_STD = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # TF-ported and timm "inception" weights
OWN = {
    "efficientnet_lite2": {"input_size": 260, **HALF_MEAN_STD, "weights": "package"},
    "inception_resnet_v2": {"input_size": 299, **HALF_MEAN_STD, "weights": "tf_in1k"},
    "inception_v3": {"input_size": 299, **HALF_MEAN_STD, "weights": "IMAGENET1K_V1"},
    "mobilenet_v2": {"input_size": 224, **IMAGENET_MEAN_STD, "weights": "IMAGENET1K_V1"},
    "resnet101": {"input_size": 224, **IMAGENET_MEAN_STD, "weights": "IMAGENET1K_V2"},
    "vgg16": {"input_size": 224, **IMAGENET_MEAN_STD, "weights": "IMAGENET1K_V1"},
}
# The order `python train.py --cfg job` prints them in (the base declares every key in this order).
KEY_ORDER = ["name", "input_size", "mean", "std", "weights", "weights_path", "seed", "calibration_images",
             "batch_size", "num_workers", "decode", "trainable_blocks"]


def _cnn_section(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return OmegaConf.to_container(cfg.cnn, resolve=True)


@pytest.mark.parametrize("name", sorted(OWN))
def test_each_cnn_option_composes_its_own_keys_and_the_shared_ones(name):
    cnn = _cnn_section("dataset=coco", f"cnn={name}")  # coco adjusts no cnn key
    assert cnn == {"name": name, **OWN[name], **SHARED}
    assert list(cnn) == KEY_ORDER


def test_a_cnn_file_still_wins_over_the_shared_keys(tmp_path):
    # A CNN that needs smaller extraction batches says so in its own file.
    (tmp_path / "cnn").mkdir()
    (tmp_path / "cnn" / "big_cnn.yaml").write_text(
        "defaults:\n  - /cnn_base@_here_\n  - _self_\nname: big_cnn\ninput_size: 512\n"
        "mean: [0, 0, 0]\nstd: [1, 1, 1]\nweights: null\nbatch_size: 4\n")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra.searchpath=[file://{tmp_path}]",
                                                      "dataset=coco", "cnn=big_cnn"])
    assert cfg.cnn.batch_size == 4 and cfg.cnn.calibration_images == SHARED["calibration_images"]


def test_the_shapes_dataset_keeps_its_random_cnn_at_128_px():
    assert _cnn_section() == {"name": "vgg16", **OWN["vgg16"], **SHARED, "weights": None, "input_size": 128}
    chosen = _cnn_section("dataset=shapes", "cnn=resnet101")  # another CNN, still random, still 128 px
    assert chosen == {"name": "resnet101", **OWN["resnet101"], **SHARED, "weights": None, "input_size": 128}


def test_an_experiment_and_the_command_line_win_over_the_shared_keys():
    cnn = _cnn_section("experiment=flickr8k_mobilenet", "cnn.num_workers=0")
    assert cnn["weights_path"] == "../shared/weights/mobilenet_v2_imagenet.pth"
    assert cnn["num_workers"] == 0 and cnn["seed"] == SHARED["seed"]


def test_the_base_is_not_a_cnn_option():
    # What `python train.py --help` lists for the group (Hydra's help asks the same loader).
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        assert sorted(loader.get_group_options("cnn")) == sorted(OWN)
