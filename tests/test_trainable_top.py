"""A trainable CNN top (`cnn.trainable_blocks`): the features file holds what enters the CNN's last
blocks, the model trains them with the decoder, and every later step (checkpoints, resume, the
API and evaluate) runs them the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

from captioner.features.backbones import ARCHITECTURES, grid_units, split_backbone
from captioner.features.feature_file import FeatureFile, FeatureFileError
from captioner.runs.run import run
from captioner.settings.choices import TRAINABLE_BLOCKS
from tests.conftest import compose_config


@pytest.mark.parametrize("name, size", [("mobilenet_v2", 64), ("efficientnet_lite2", 64), ("vgg16", 64),
                                        ("resnet101", 64), ("inception_v3", 96)])
def test_the_listed_blocks_run_one_after_another_are_the_grid_network(name, size):
    torch.manual_seed(0)
    net = ARCHITECTURES[name].build(None).eval()
    images = torch.randn(2, 3, size, size)
    bottom, top = split_backbone(name, net, TRAINABLE_BLOCKS[name])
    with torch.no_grad():
        assert torch.equal(top(bottom(images)), net(images))
        assert torch.equal(torch.nn.Sequential(*grid_units(name, net))(images), net(images))
    assert 0 < TRAINABLE_BLOCKS[name] < len(grid_units(name, net))


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MobileNetV2 state dict standing in for ImageNet weights (no download here)."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), path)
    return path


def top_config(weights: Path, data_root: Path, *overrides: str):
    return compose_config("cnn=mobilenet_v2", "cnn.input_size=64", f"cnn.weights_path={weights}",
                          "cnn.trainable_blocks=1", "model.top_lr_multiplier=1.0", "meteor=false",
                          *overrides, data_root=data_root)


@pytest.fixture(scope="module")
def top_run(weights_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("top")
    run(top_config(weights_file, root / "data", "trainer.max_epochs=2"), run_dir=root / "run", base_dir=root)
    return root / "run"


def test_the_file_holds_the_activations_entering_the_top_and_says_so(top_run):
    (path,) = (top_run.parent / "data" / "features").glob("*.h5")
    assert path.name.startswith("shapes-mobilenet_v2-top1-")  # a frozen CNN's file stays where it was
    features = FeatureFile(path)
    assert features.identity["trainable_blocks"] == 1 and features.shape[1:] == (4, 160)  # 2x2x160
    record = features.cnn_record()
    assert record["top_grid"] == [2, 2] and record["top_channels"] == 1280 and record["top_scale"] > 0


def test_the_top_learns_from_the_decoders_loss_while_batchnorm_keeps_its_statistics(top_run, weights_file):
    pretrained = torch.load(weights_file, weights_only=True)
    state = torch.load(top_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    # the top is MobileNetV2's features.17 (inverted residual) and features.18 (1x1 conv to 1280)
    assert torch.equal(state["top.blocks.0.1.1.running_mean"], pretrained["features.18.1.running_mean"])
    assert torch.equal(state["top.blocks.0.0.conv.1.1.running_var"],
                       pretrained["features.17.conv.1.1.running_var"])
    assert not torch.equal(state["top.blocks.0.1.0.weight"], pretrained["features.18.0.weight"])
    assert not torch.equal(state["top.blocks.0.1.1.weight"], pretrained["features.18.1.weight"])  # BN affine


def test_the_tops_dropout_trains_during_the_fit_and_rests_when_captioning(top_run, weights_file, tmp_path,
                                                                        monkeypatch):
    # CnnTop used to start (and so train) in eval mode: `model.top_dropout` did nothing.
    from captioner.model.cnn_top import CnnTop

    seen = []
    original = CnnTop.forward

    def recording(top, regions):
        batchnorm = [m.training for m in top.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        seen.append((torch.is_grad_enabled(), top.dropout.training, any(batchnorm)))
        return original(top, regions)

    monkeypatch.setattr(CnnTop, "forward", recording)
    run(top_config(weights_file, top_run.parent / "data", "trainer.max_epochs=1", "model.top_dropout=0.5"),
        run_dir=tmp_path / "run", base_dir=tmp_path)
    training = [dropout for grad, dropout, _ in seen if grad]
    assert training and all(training)
    assert not any(dropout for grad, dropout, _ in seen if not grad)  # validation, test
    assert not any(batchnorm for *_, batchnorm in seen)  # ImageNet statistics, always


def test_a_fine_tuned_top_captions_new_images_as_training_and_evaluate_do(top_run):
    import captioner
    from captioner.inference.evaluate import evaluate

    checkpoint = top_run / "checkpoints" / "last.ckpt"
    written = json.loads((top_run / "captions.json").read_text())
    model = captioner.Captioner.from_checkpoint(checkpoint)
    assert model.grid == (2, 2)  # attention covers the top's output grid
    from_images = [r.caption for r in model.caption([entry["image"] for entry in written])]
    scored = evaluate(checkpoint, split="test", output=top_run / "evaluated", meteor=False)
    results = json.loads((top_run / "evaluated" / "results.json").read_text())
    evaluated = {str(r["image_id"]): r["caption"] for r in results}
    trained = json.loads((top_run / "metrics.json").read_text())
    assert from_images == [entry["caption"] for entry in written]
    assert [evaluated[entry["image_id"]] for entry in written] == from_images
    assert scored["scores"]["cider"] == pytest.approx(trained["test"]["cider"])


def test_a_resumed_run_with_a_trainable_top_ends_exactly_as_an_uninterrupted_one(top_run, weights_file,
                                                                                 tmp_path):
    data = top_run.parent / "data"
    run(top_config(weights_file, data, "trainer.max_epochs=1"), run_dir=tmp_path / "first",
        base_dir=tmp_path)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    run(top_config(weights_file, data, "trainer.max_epochs=2", f"ckpt_path={last}"),
        run_dir=tmp_path / "resumed", base_dir=tmp_path)
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    whole = torch.load(top_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert resumed.keys() == whole.keys() and any(k.startswith("top.") for k in whole)
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_a_features_file_made_for_another_number_of_blocks_is_refused(top_run, weights_file, tmp_path):
    (path,) = (top_run.parent / "data" / "features").glob("*-top1-*.h5")
    frozen = compose_config("cnn=mobilenet_v2", "cnn.input_size=64", f"cnn.weights_path={weights_file}",
                            f"features_path={path}", data_root=top_run.parent / "data")
    with pytest.raises(FeatureFileError, match="trainable_blocks: file has 1, config wants 0"):
        run(frozen, run_dir=tmp_path / "run", base_dir=tmp_path)


def test_training_never_builds_a_cnn_itself():
    """training/ gets the top as a module: runs/ and inference/ build it (they know the CNNs)."""
    training = Path(__file__).resolve().parent.parent / "captioner" / "training"
    offenders = [p.name for p in training.glob("*.py") if "captioner.features" in p.read_text()]
    assert offenders == []
