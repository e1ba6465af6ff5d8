"""Captioning new images with a checkpoint: the same CNN is rebuilt, the CLI writes figures."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from captioner.features.cache import prepare
from captioner.features.feature_file import FeatureFile
from captioner.features.image_featurizer import CnnNotRebuildableError, ImageFeaturizer
from captioner.inference.caption import figure_paths, image_files, main
from captioner.training.checkpoint_loading import load_module
from tests.conftest import compose_config, python, settings_of
from tests.hostile_files import decompression_bomb_png


def caption_cli(cwd: Path, *arguments: str) -> subprocess.CompletedProcess:
    """The caption command's `main` in this process (no interpreter start), with what a shell
    would see: its exit status, stdout and stderr. One test runs the real command."""
    out, err = io.StringIO(), io.StringIO()
    status = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(arguments))
        except SystemExit as exit:
            status = exit.code if isinstance(exit.code, int) else 1
    return subprocess.CompletedProcess(["captioner.caption", *arguments], status, out.getvalue(),
                                       err.getvalue())


def test_the_rebuilt_encoder_gives_the_training_features(trained_run):
    module = load_module(trained_run / "checkpoints" / "last.ckpt")
    features = FeatureFile(json.loads((trained_run / "metrics.json").read_text())["features"])
    featurizer = ImageFeaturizer(module.hparams.cnn)  # a random VGG16, calibrated again
    shown = [int(i) for i in features.splits["test"][:3]]
    paths = [Path(module.hparams.cnn["calibration_paths"][0]).parent / f"{features.image_ids[i]}.jpg"
             for i in shown]
    again = featurizer(paths)
    assert torch.equal(again, torch.from_numpy(features.read(shown)).float())


def test_the_cli_captions_a_jpeg_and_draws_one_panel_per_word(trained_run, tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (150, 100), (30, 120, 200)).save(photo)
    # the real command, as a user runs it
    result = python(tmp_path, "-m", "captioner.caption", str(trained_run / "checkpoints" / "last.ckpt"),
                    str(photo), "--attention", str(tmp_path / "out.png"), "--json")
    (found,) = json.loads(result.stdout)
    words = found["caption"].split()
    assert found["image"] == str(photo) and words
    with Image.open(tmp_path / "out.png") as figure:  # 5 panels per row, 192x208 px each
        assert figure.size == (192 * min(5, len(words)), 208 * math.ceil(len(words) / 5))


def test_the_cli_captions_a_folder_as_plain_lines_with_beam_search(trained_run, tmp_path):
    for name in ("a.jpg", "b.png"):
        Image.new("RGB", (80, 80), (200, 40, 40)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    best = json.loads((trained_run / "metrics.json").read_text())["checkpoint"]
    result = caption_cli(tmp_path, best, str(tmp_path), "--decode", "beam", "--beam-size", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.rstrip("\n").splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.png")]
    assert all(len(line.split("\t")) == 2 for line in lines)  # a barely trained model may write ""


def test_missing_images_and_empty_folders_are_clear_errors(trained_run, tmp_path):
    result = caption_cli(tmp_path, str(trained_run / "checkpoints" / "last.ckpt"), str(tmp_path / "nope.jpg"))
    assert result.returncode == 2 and "nope.jpg: no such image file or folder" in result.stderr
    with pytest.raises(FileNotFoundError, match="no images"):
        image_files([tmp_path])


@pytest.mark.parametrize("arguments, message", [
    (["--device", "cuda:99"], "device 'cuda:99': this machine has"),
    (["--device", "toaster"], "device 'toaster': not a device name torch knows"),
    (["--attention", "out.txt"], "--attention out.txt: matplotlib cannot write .txt figures"),
    (["--attention", "."], "--attention .: a folder; give a file name")])
def test_a_bad_device_or_figure_path_is_one_line_before_any_captioning(trained_run, tmp_path, capsys,
                                                                      monkeypatch, arguments, message):
    # were a raw traceback (devices), or found only after every caption (figures)
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (80, 80), (200, 40, 40)).save(photo)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main([str(trained_run / "checkpoints" / "last.ckpt"), str(photo), *arguments])
    captured = capsys.readouterr()
    assert stopped.value.code == 2 and not captured.out
    (line,) = captured.err.splitlines()
    assert line.startswith("python -m captioner.caption: error: ") and message in line


def test_figures_of_images_that_share_a_name_do_not_overwrite_each_other(tmp_path):
    images = [str(tmp_path / "a" / "dog.jpg"), str(tmp_path / "b" / "dog.jpg"), str(tmp_path / "dog.png"),
              str(tmp_path / "cat.jpg")]
    paths = figure_paths(tmp_path / "att.png", images, several=True)
    assert [p.name for p in paths.values()] == ["att_dog-1.png", "att_dog-2.png", "att_dog-3.png",
                                                "att_cat.png"]
    # without a suffix the figure is the .png matplotlib writes, and the path printed is that file
    assert figure_paths(tmp_path / "out", images[:1], several=False) == {images[0]: tmp_path / "out.png"}


def test_a_folder_gives_every_image_format_pil_reads_by_its_usual_suffix(tmp_path):
    for name in ("a.jpg", "b.jfif", "c.tif", "d.TIFF", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in image_files([tmp_path])] == ["a.jpg", "b.jfif", "c.tif", "d.TIFF"]


def test_a_random_batchnorm_cnn_is_rebuilt_with_its_calibration_batches(tmp_path):
    # BatchNorm statistics depend on the calibration batch size: 16 here, not the CLI's own choice.
    cfg = compose_config("cnn=resnet101", "cnn.input_size=64", "cnn.batch_size=16",
                         data_root=tmp_path / "data")
    records, path = prepare(settings_of(cfg))
    features = FeatureFile(path)
    shown = [int(i) for i in features.splits["test"][:3]]
    path_of = {r.image_id: r.path for r in records}
    again = ImageFeaturizer(features.cnn_record())([path_of[features.image_ids[i]] for i in shown])
    # Equal up to one float16 step: with one thread, a 3-image batch and the 16-image batches of
    # the extraction may take different convolution kernels. Other calibration batches differ by
    # whole units (the test fails with cnn.batch_size=8 in the extraction).
    torch.testing.assert_close(again, torch.from_numpy(features.read(shown)).float(), rtol=1e-3, atol=1e-3)


def test_one_bad_file_among_good_ones_is_reported_and_the_rest_captioned(trained_run, tmp_path):
    for name in ("a.jpg", "c.png"):
        Image.new("RGB", (80, 80), (40, 200, 40)).save(tmp_path / name)
    (tmp_path / "b_text.jpg").write_text("a text file named .jpg")
    (tmp_path / "d_empty.png").write_bytes(b"")
    decompression_bomb_png(tmp_path / "e_bomb.png")
    result = caption_cli(tmp_path, str(trained_run / "checkpoints" / "last.ckpt"), str(tmp_path))
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(tmp_path / "a.jpg"), str(tmp_path / "c.png")]
    assert all(len(line.split("\t")) == 2 for line in lines)  # a barely trained model may write ""
    errors = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    for bad in ("b_text.jpg", "d_empty.png", "e_bomb.png"):
        (line,) = [e for e in errors if str(tmp_path / bad) in e]
        assert line.startswith("error: ") and "cannot read image" in line and "not captioned" in line
    assert "decompression bomb" in next(e for e in errors if "e_bomb.png" in e)


def test_an_attention_figure_that_cannot_be_written_keeps_the_caption(trained_run, tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (80, 80), (200, 40, 40)).save(photo)
    (tmp_path / "taken").write_text("a file where the figure's folder should be")
    figure = tmp_path / "taken" / "out.png"  # unwritable even for root
    result = caption_cli(tmp_path, str(trained_run / "checkpoints" / "last.ckpt"), str(photo),
                         "--attention", str(figure), "--json")
    assert result.returncode == 1, result.stderr[-3000:]
    (found,) = json.loads(result.stdout)
    assert found["image"] == str(photo) and found["caption"] and "figure" not in found
    (line,) = [e for e in result.stderr.splitlines() if e.startswith("error:")]
    assert line.startswith(f"error: cannot write the attention figure {figure}")


def test_a_weights_file_is_found_again_where_it_was_and_checked_by_its_checksum(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "weights" / "mobilenet.pth"
    weights.parent.mkdir()
    torch.save(torchvision.models.mobilenet_v2().state_dict(), weights)
    cfg = compose_config("cnn=mobilenet_v2", "cnn.input_size=64", f"cnn.weights_path={weights}",
                         data_root=tmp_path / "data")
    records, path = prepare(settings_of(cfg))
    features = FeatureFile(path)
    record = features.cnn_record()  # what every checkpoint of a run on these features keeps
    assert record["weights_path"] == str(weights.resolve())
    assert record["weights"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    shown = [int(i) for i in features.splits["test"][:2]]
    images = [{r.image_id: r.path for r in records}[features.image_ids[i]] for i in shown]
    expected = torch.from_numpy(features.read(shown)).float()
    # found without being asked for, and the same CNN (up to one float16 step, as above)
    torch.testing.assert_close(ImageFeaturizer(record)(images), expected, rtol=1e-3, atol=1e-3)

    moved = tmp_path / "moved.pth"
    weights.rename(moved)
    with pytest.raises(CnnNotRebuildableError, match=f"{weights} \\(sha256 {record['weights']['sha256']}\\) "
                                                     "is not there"):
        ImageFeaturizer(record)
    torch.testing.assert_close(ImageFeaturizer(record, weights_path=moved)(images), expected,
                               rtol=1e-3, atol=1e-3)
    torch.save(torchvision.models.mobilenet_v2().state_dict(), moved)  # other weights, same name
    with pytest.raises(CnnNotRebuildableError, match="has changed"):
        ImageFeaturizer(record, weights_path=moved)
