from pathlib import Path

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from captioner.features.backbones import WeightsNotFoundError, build_backbone, weights_source
from tests.conftest import CONF, python


def _cnn(name: str, **values):
    base = {"name": name, "weights": None, "weights_path": None, "seed": 0}
    return OmegaConf.create({**base, **values})


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
    cnn = OmegaConf.load(CONF / "cnn" / "mobilenet_v2.yaml")
    cnn.weights_path = str(SHARED_MOBILENET)
    net = build_backbone(cnn)
    state = torch.load(SHARED_MOBILENET, weights_only=True)
    torch.testing.assert_close(net.features[18][0].weight, state["features.18.0.weight"])
    with torch.inference_mode():
        grid = net(torch.randn(2, 3, cnn.input_size, cnn.input_size))
    assert tuple(grid.shape[1:]) == (cnn.channels, *cnn.grid) and grid.isfinite().all()


def test_an_unknown_weights_name_is_a_clear_error():
    with pytest.raises(ValueError, match="cnn.weights='IMAGENET9K' is not a weight of VGG16_Weights"):
        build_backbone(_cnn("vgg16", weights="IMAGENET9K"))


@pytest.mark.parametrize("name", ["inception_v3", "vgg16", "resnet101", "mobilenet_v2",
                                  "inception_resnet_v2"])
def test_each_cnn_config_gives_the_grid_it_documents(name):
    cnn = OmegaConf.load(CONF / "cnn" / f"{name}.yaml")
    cnn.weights = None
    net = build_backbone(cnn)
    with torch.inference_mode():
        grid = net(torch.zeros(1, 3, cnn.input_size, cnn.input_size))
    assert tuple(grid.shape[1:]) == (cnn.channels, *cnn.grid)


def test_timm_weights_file_loads_into_inception_resnet_v2(tmp_path):
    import timm

    torch.manual_seed(5)
    state = timm.create_model("inception_resnet_v2", pretrained=False).state_dict()
    from safetensors.torch import save_file

    save_file(state, tmp_path / "model.safetensors")  # the file the Hugging Face hub serves
    net = build_backbone(_cnn("inception_resnet_v2", weights_path=str(tmp_path / "model.safetensors")))
    torch.testing.assert_close(net.model.conv2d_7b.conv.weight, state["conv2d_7b.conv.weight"])


def test_unloadable_timm_weights_say_where_timm_looks(tmp_path):
    # A fresh process, so the Hugging Face hub reads HF_HUB_OFFLINE (as on a machine without network).
    script = ("from omegaconf import OmegaConf\nfrom captioner.features.backbones import build_backbone\n"
              "build_backbone(OmegaConf.create({'name': 'inception_resnet_v2', 'weights': 'tf_in1k'}))")
    result = python(tmp_path, "-c", script, check=False,
                    env={"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0 and "WeightsNotFoundError" in result.stderr
    folder = tmp_path / "hub" / "models--timm--inception_resnet_v2.tf_in1k"
    assert f"{folder}/snapshots/<revision>/model.safetensors" in result.stderr
    assert "cnn.weights_path=" in result.stderr
