from pathlib import Path

import pytest
import torch
import torchvision

from captioner.features.backbones import (
    WeightsFileError,
    WeightsNotFoundError,
    build_backbone,
    weights_source,
)
from tests.conftest import CONF, cnn_settings, python

# Each CNN's grid of regions (rows, columns) at the input sizes its conf/cnn file names, and its
# channels. Nothing in captioner/ reads these (the features file records what extraction measured),
# so they live here, not in the config, and this table is what the configs' comments are checked by.
GRIDS_AND_CHANNELS = {
    "vgg16": ({224: (14, 14), 128: (8, 8)}, 512),
    "inception_v3": ({299: (8, 8)}, 2048),
    "resnet101": ({224: (7, 7), 448: (14, 14)}, 2048),
    "mobilenet_v2": ({224: (7, 7)}, 1280),
    "inception_resnet_v2": ({299: (8, 8)}, 1536),
    "efficientnet_lite2": ({260: (9, 9)}, 1280),
}


def _cnn(name: str, **values):
    return cnn_settings(name, **{"weights": None, "weights_path": None, "seed": 0, **values})


@pytest.mark.parametrize("name, full_model", [
    ("vgg16", lambda: torchvision.models.vgg16(weights=None)),
    ("resnet101", lambda: torchvision.models.resnet101(weights=None)),
    ("mobilenet_v2", lambda: torchvision.models.mobilenet_v2(weights=None)),
    ("inception_v3", lambda: torchvision.models.inception_v3(weights=None, aux_logits=True,
                                                             init_weights=True)),
])
def test_a_local_weights_file_is_loaded_into_the_grid_network(tmp_path, name, full_model):
    torch.manual_seed(123)
    state = full_model().state_dict()
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    net = build_backbone(_cnn(name, weights_path=str(path)))
    loaded = dict(net.named_parameters())
    # every parameter of the grid network came from the file (none kept its seed-0 init)
    originals = {k: v for k, v in state.items() if k.endswith((".weight", ".bias"))}
    matched = sum(any(torch.equal(p, o) for o in originals.values() if o.shape == p.shape)
                  for p in loaded.values())
    assert matched == len(loaded)
    assert weights_source(_cnn(name, weights_path=str(path))).label() == f"file:{name}.pth"


def test_a_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsNotFoundError, match=f"cnn.weights_path={missing} does not exist"):
        build_backbone(_cnn("vgg16", weights_path=str(missing)))


def test_unloadable_imagenet_weights_say_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = Path(tmp_path) / "hub" / "checkpoints" / "vgg16-397923af.pth"
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"a truncated download")  # present in the cache, but not valid
    with pytest.raises(WeightsNotFoundError) as error:
        build_backbone(_cnn("vgg16", weights="IMAGENET1K_V1"))
    assert f"put it at {expected}" in str(error.value)
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in str(error.value)
    assert "cnn.weights_path=" in str(error.value) and "cnn.weights=null" in str(error.value)


@pytest.mark.parametrize("other, why", [
    (lambda: torchvision.models.resnet18(weights=None), "missing"),  # other names
    (lambda: torchvision.models.mobilenet_v3_small(weights=None), "size mismatch"),  # same names
])
def test_a_weights_file_of_another_architecture_names_the_file_and_the_fix(tmp_path, other, why):
    path = tmp_path / "other.pth"
    torch.save(other().state_dict(), path)
    with pytest.raises(ValueError) as error:
        build_backbone(_cnn("mobilenet_v2", weights_path=str(path)))
    message = str(error.value)
    assert message.startswith(f"{path}: not mobilenet_v2 weights") and why in message
    assert "point cnn.weights_path at a state dict of mobilenet_v2" in message


def test_a_whole_pickled_model_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None), path)  # the module, not its state dict
    with pytest.raises(ValueError, match=f"{path}: not a loadable state dict .*model.state_dict()"):
        build_backbone(_cnn("mobilenet_v2", weights_path=str(path)))


def test_mobilenet_v2_weights_come_from_the_torchvision_enum(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: offline, nothing to load
    for tag, url in [("IMAGENET1K_V1", torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url),
                     ("IMAGENET1K_V2", torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V2.url)]:
        source = weights_source(_cnn("mobilenet_v2", weights=tag))
        assert source.as_dict() == {"kind": "torchvision", "name": f"MobileNet_V2_Weights.{tag}"}
        expected = Path(tmp_path) / "hub" / "checkpoints" / Path(url).name
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.write_bytes(b"a truncated download")
        with pytest.raises(WeightsNotFoundError, match=f"Download {url} and put it at {expected}"):
            build_backbone(_cnn("mobilenet_v2", weights=tag))


SHARED_MOBILENET = Path(__file__).resolve().parents[2] / "shared" / "weights" / "mobilenet_v2_imagenet.pth"


@pytest.mark.skipif(not SHARED_MOBILENET.is_file(), reason=f"{SHARED_MOBILENET} not present")
def test_the_shared_mobilenet_v2_file_gives_a_pretrained_grid():
    cnn = cnn_settings("mobilenet_v2", weights_path=SHARED_MOBILENET)
    net = build_backbone(cnn)
    state = torch.load(SHARED_MOBILENET, weights_only=True)
    torch.testing.assert_close(net.features[18][0].weight, state["features.18.0.weight"])
    with torch.inference_mode():
        grid = net(torch.randn(2, 3, cnn.input_size, cnn.input_size))
    grids, channels = GRIDS_AND_CHANNELS["mobilenet_v2"]
    assert tuple(grid.shape[1:]) == (channels, *grids[cnn.input_size]) and grid.isfinite().all()


def test_an_unknown_weights_name_is_a_clear_error():
    with pytest.raises(ValueError, match="cnn.weights='IMAGENET9K' is not a weight of VGG16_Weights"):
        build_backbone(_cnn("vgg16", weights="IMAGENET9K"))


def test_the_grid_table_covers_every_cnn_option():
    assert sorted(GRIDS_AND_CHANNELS) == sorted(p.stem for p in (CONF / "cnn").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(GRIDS_AND_CHANNELS))
def test_each_cnn_gives_the_grid_its_config_comment_names(name):
    cnn = cnn_settings(name, weights=None)
    grids, channels = GRIDS_AND_CHANNELS[name]
    assert cnn.input_size in grids, f"conf/cnn/{name}.yaml's input_size has no entry in the table"
    net = build_backbone(cnn)
    for size, rows_columns in grids.items():
        with torch.inference_mode():
            grid = net(torch.zeros(1, 3, size, size))
        assert tuple(grid.shape[1:]) == (channels, *rows_columns), size


def test_timm_weights_file_loads_into_inception_resnet_v2(tmp_path):
    import timm

    torch.manual_seed(5)
    state = timm.create_model("inception_resnet_v2", pretrained=False).state_dict()
    from safetensors.torch import save_file

    save_file(state, tmp_path / "model.safetensors")  # the file the Hugging Face hub serves
    net = build_backbone(_cnn("inception_resnet_v2", weights_path=str(tmp_path / "model.safetensors")))
    torch.testing.assert_close(net.model.conv2d_7b.conv.weight, state["conv2d_7b.conv.weight"])


@pytest.mark.parametrize("name, size, weights, repository", [
    ("inception_resnet_v2", 299, "tf_in1k", "inception_resnet_v2.tf_in1k"),
    # timm's name is not the cnn= name: the cache folder named before did not exist
    ("efficientnet_lite2", 260, "in1k", "tf_efficientnet_lite2.in1k")])
def test_unloadable_timm_weights_say_where_timm_looks(tmp_path, name, size, weights, repository):
    # A fresh process, so the Hugging Face hub reads HF_HUB_OFFLINE (as on a machine without network).
    script = ("from captioner.features.backbones import build_backbone\n"
              "from captioner.settings import CnnSettings\n"
              f"build_backbone(CnnSettings({name!r}, {size}, weights={weights!r}))")
    result = python(tmp_path, "-c", script, check=False,
                    env={"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0 and "WeightsNotFoundError" in result.stderr
    folder = tmp_path / "hub" / f"models--timm--{repository}"
    assert f"{folder}/snapshots/<revision>/model.safetensors" in result.stderr
    assert f"repository timm/{repository})" in result.stderr and "cnn.weights_path=" in result.stderr


def test_a_damaged_safetensors_file_is_named(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\xff" * 64)  # a cut download: SafetensorError named no file
    with pytest.raises(WeightsFileError, match=f"{path}: not a loadable safetensors file"):
        build_backbone(_cnn("inception_resnet_v2", weights_path=str(path)))
