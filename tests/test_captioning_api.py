"""The Python API: `Captioner.from_checkpoint(...).caption(images)` and `evaluate_checkpoint`, the
same captions and scores as the commands give, for paths, PIL images and uint8 tensors alike."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

import captioner
from captioner.errors import ConfigError
from captioner.inference.evaluate import main as evaluate_main
from captioner.runs.run import run
from tests.conftest import compose_config, python
from tests.test_caption import caption_cli


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that learned 8 scenes by heart, so that its captions have words to compare."""
    root = tmp_path_factory.mktemp("fitted")
    cfg = compose_config(
        "dataset.num_images=8", "dataset.captions_per_image=1",
        "dataset.split_fractions={train: 0.75, val: 0.125, test: 0.125}", "dataset.val_split=train",
        "dataset.test_split=train",
        "model.dropout=0.0", "model.lr=3e-3", "model.attention_regularization=0", "data.batch_size=8",
        "trainer.max_epochs=150", "trainer.check_val_every_n_epoch=50", "meteor=false",
        data_root=root / "data")
    run(cfg, root / "run", base_dir=root)
    return root / "run"


@pytest.fixture(scope="module")
def checkpoint(fitted_run: Path) -> Path:
    return fitted_run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def photos(fitted_run: Path) -> list[Path]:
    """Three of the scenes it learned, and a photo it never saw."""
    images = sorted((fitted_run.parent / "data" / "shapes" / "images").glob("*.jpg"))[:3]
    made = fitted_run.parent / "api-photo.png"
    Image.new("RGB", (90, 60), (40, 160, 60)).save(made)
    return [*images, made]


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> captioner.Captioner:
    return captioner.Captioner.from_checkpoint(checkpoint, device="cpu")


@pytest.mark.parametrize("options, flags", [({}, []), ({"decode": "beam", "beam_size": 3},
                                                          ["--decode", "beam", "--beam-size", "3"])])
def test_the_api_writes_the_captions_the_command_writes(model, checkpoint, photos, tmp_path, options, flags):
    results = model.caption(photos, **options)
    command = caption_cli(tmp_path, str(checkpoint), *map(str, photos), "--json", *flags)
    assert command.returncode == 0, command.stderr
    assert [(r.image, r.caption) for r in results] == [(c["image"], c["caption"]) for c in
                                                        json.loads(command.stdout)]
    assert all(r.ok and r.words == r.caption.split() and r.attention is None for r in results)
    assert sum(bool(r.words) for r in results) >= 3


def test_the_api_writes_the_captions_training_wrote_from_the_features_file(model, fitted_run):
    """Not through the CLI (a shell over the API): the run's own test captions, decoded from the
    HDF5 features at the end of training, against the API from the image files."""
    written = json.loads((fitted_run / "captions.json").read_text())
    results = model.caption([entry["image"] for entry in written])
    assert [r.caption for r in results] == [entry["caption"] for entry in written]
    assert len(written) == 6 and sum(bool(r.words) for r in results) >= 5


def test_pil_images_and_uint8_tensors_are_captioned_as_their_files_are(model, photos):
    from_files = model.caption(photos, attention=True)
    images = [Image.open(path) for path in photos]
    tensors = [torchvision.io.read_image(str(path)) for path in photos]  # uint8 (3, H, W)
    from_memory = model.caption([*images, *tensors], attention=True, batch_size=3)  # batches cross kinds
    assert [r.caption for r in from_memory] == [r.caption for r in from_files] * 2
    assert [r.image for r in from_memory] == [f"<image {i}>" for i in range(2 * len(photos))]
    for result in from_files:
        regions = 1 if model.grid is None else model.grid[0] * model.grid[1]
        assert result.attention.shape == (len(result.words), regions)
    torch.testing.assert_close(torch.from_numpy(from_memory[0].attention),
                               torch.from_numpy(from_files[0].attention))
    assert model.caption(photos[0])[0].caption == from_files[0].caption  # one image alone


def test_a_bad_image_is_named_and_the_others_are_still_captioned(model, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    results = model.caption([photos[0], broken, torch.zeros(3, 8, 8), photos[1], 42])
    assert [r.ok for r in results] == [True, False, False, True, False]
    assert results[1].image == str(broken) and "cannot identify image file" in results[1].error
    assert "uint8 (3, H, W)" in results[2].error and "cannot caption a int" in results[4].error
    assert results[3].caption == model.caption(photos[1])[0].caption


def test_a_bad_decoding_option_is_refused_before_any_image_is_read(model, photos):
    with pytest.raises(ConfigError, match="decode.beam_size=0: expected an integer >= 1"):
        model.caption(photos, decode="beam", beam_size=0)


@pytest.mark.parametrize("record", [None, {"cnn": "vgg16", "weights": "IMAGENET1K_V1"}])
def test_a_checkpoint_without_a_usable_cnn_record_is_named(checkpoint, tmp_path, record):
    # None: another tool's checkpoint, or CaptionModule(cnn=None); a string for weights: an old record.
    # Before: "error: 'weights'" (a bare KeyError) and a TypeError's traceback.
    from captioner.features.image_featurizer import CnnNotRebuildableError

    state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    state["hyper_parameters"]["cnn"] = record
    torch.save(state, tmp_path / "no-cnn.ckpt")
    with pytest.raises(CnnNotRebuildableError, match=rf"{tmp_path / 'no-cnn.ckpt'}: the record of the CNN"):
        captioner.Captioner.from_checkpoint(tmp_path / "no-cnn.ckpt")


def test_evaluate_checkpoint_returns_the_scores_the_command_prints_and_writes(checkpoint, tmp_path, capsys):
    scores = captioner.evaluate_checkpoint(checkpoint, split="val", meteor=False, output=tmp_path / "api")
    evaluate_main([str(checkpoint), "--split", "val", "--no-meteor", "--output", str(tmp_path / "cli")])
    printed = capsys.readouterr().out
    written = json.loads((tmp_path / "cli" / "scores.json").read_text())["scores"]
    assert scores == written and set(scores) >= {"bleu4", "cider", "rouge_l"}
    assert f"cider={scores['cider']:.3f}" in printed


def test_importing_the_package_stays_light(tmp_path):
    result = python(tmp_path, "-c", "import sys, captioner; print('torch' in sys.modules); "
                                    "print(captioner.Captioner.__name__)")
    assert result.stdout.split() == ["False", "Captioner"]
    assert sys.modules.get("captioner") is captioner
