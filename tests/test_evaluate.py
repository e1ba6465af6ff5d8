"""`captioner.evaluate`: scores any split of a checkpoint, checkable with coco-caption's own code;
checkpoints are plain data and load without running pickled code."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from captioner.errors import ConfigError
from captioner.features.cache import prepare
from captioner.features.feature_file import FeatureFile
from captioner.inference.evaluate import OutputFolderError, evaluate
from captioner.training.checkpoint_loading import CheckpointError, load_module
from tests.conftest import compose_config, python, settings_of
from tests.test_metrics import _pycocoevalcap_directly


@pytest.mark.parametrize("decode, message", [
    ({"strategy": "beam", "beam_size": 0}, r"decode.beam_size=0: expected an integer >= 1"),
    ({"strategy": "beam", "length_penalty": -1}, r"decode.length_penalty=-1: expected a number >= 0"),
    ({"beam": 3}, r"decode option 'beam': expected one of strategy, beam_size"),
], ids=["beam-size-0", "negative-length-penalty", "unknown-option"])
def test_a_bad_decoding_option_is_refused_before_the_checkpoint_is_read(tmp_path, decode, message):
    # Before, evaluate loaded the checkpoint and features first, then failed deep in beam search
    # (IndexError) or took a negative length penalty; the CLI's flags were checked, Python's not.
    with pytest.raises(ConfigError, match=message):
        evaluate(tmp_path / "none.ckpt", decode=decode, accelerator="cpu")


def test_scores_equal_pycocoevalcap_on_the_results_file(trained_run, tmp_path):
    summary = evaluate(trained_run / "checkpoints" / "last.ckpt", split="val", decode={"strategy": "beam"},
                       output=tmp_path, accelerator="cpu")
    results = json.loads((tmp_path / "results.json").read_text())
    features = FeatureFile(summary["features"])
    references = {features.image_ids[i]: refs for i, refs in features.references("val").items()}
    assert sorted(r["image_id"] for r in results) == sorted(references)
    expected = _pycocoevalcap_directly({r["image_id"]: r["caption"] for r in results}, references)
    assert json.loads((tmp_path / "scores.json").read_text())["scores"] == pytest.approx(expected, abs=1e-9)
    assert summary["decode"]["strategy"] == "beam" and summary["split"] == "val"


def test_each_decoding_setting_keeps_its_own_folder_and_a_bad_output_is_refused_up_front(trained_run,
                                                                                         tmp_path):
    # Before, every beam search of a split wrote <run>/evaluations/test-beam: the second replaced the first.
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(trained_run / "checkpoints" / "last.ckpt", run / "checkpoints")
    shutil.copy(trained_run / "metrics.json", run)  # which features the run trained on
    checkpoint = run / "checkpoints" / "last.ckpt"
    for beam in (2, 3):
        evaluate(checkpoint, split="val", decode={"strategy": "beam", "beam_size": beam}, accelerator="cpu",
                 meteor=False)
    evaluate(checkpoint, split="val", accelerator="cpu", meteor=False)
    assert sorted(p.name for p in (run / "evaluations").iterdir()) == ["val-beam2-lp0", "val-beam3-lp0",
                                                                       "val-greedy"]
    kept = json.loads((run / "evaluations" / "val-beam2-lp0" / "scores.json").read_text())
    assert kept["decode"]["beam_size"] == 2

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(OutputFolderError, match=f"--output {blocked}: cannot make the folder"):
        evaluate(checkpoint, split="val", output=blocked, accelerator="cpu", meteor=False)


def test_without_java_the_evaluation_finishes_with_one_warning(trained_run, tmp_path):
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    with_java = evaluate(checkpoint, output=tmp_path / "java", accelerator="cpu")["scores"]
    java_dir = os.path.realpath(os.path.dirname(shutil.which("java")))
    no_java = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                              if os.path.realpath(d) != java_dir)
    # a process of its own: the warning is given once per process
    result = python(tmp_path, "-m", "captioner.evaluate", str(checkpoint), "--accelerator", "cpu",
                    "--output", str(tmp_path / "none"), env={"PATH": no_java})
    without = json.loads((tmp_path / "none" / "scores.json").read_text())["scores"]
    assert result.stderr.count("METEOR is left out") == 1 and "install" in result.stderr
    assert "meteor" in with_java and "meteor" not in without
    others = {k: v for k, v in with_java.items() if k != "meteor"}
    assert without == pytest.approx(others, abs=1e-9)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))  # what a hostile checkpoint would run on load


def test_a_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"payload": _Payload(marker)}}, hostile)
    with pytest.raises(CheckpointError, match="hostile.ckpt: not a captioner checkpoint") as refused:
        load_module(hostile)
    assert not marker.exists()
    # torch's own message advises weights_only=False, which would run the code: not passed on
    message = str(refused.value)
    assert "weights_only" not in message and "no code from a checkpoint is run" in message
    with pytest.raises(CheckpointError, match=f"{tmp_path} is a folder; pass the path of a .ckpt file"):
        load_module(tmp_path)


def test_a_checkpoint_is_weights_and_json_metadata(trained_run):
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    metadata = json.loads(json.dumps(checkpoint["hyper_parameters"]))
    assert metadata["vocabulary"][:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert metadata["cnn"]["cnn"] == "vgg16" and metadata["cnn"]["feature_scale"] > 0
    assert all(isinstance(v, torch.Tensor) for v in checkpoint["state_dict"].values())


def test_features_from_another_cnn_are_refused(trained_run, tmp_path):
    cfg = compose_config("cnn=resnet101", "cnn.input_size=64", data_root=tmp_path / "data")
    _, other = prepare(settings_of(cfg))
    with pytest.raises(CheckpointError, match="cnn: checkpoint 'vgg16', features 'resnet101'"):
        evaluate(trained_run / "checkpoints" / "last.ckpt", features=other, accelerator="cpu")
    # a checkpoint that records no CNN (another tool's, an older one): the channels still tell
    state = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    del state["hyper_parameters"]["cnn"]
    torch.save(state, tmp_path / "no-record.ckpt")
    with pytest.raises(CheckpointError, match="channels: checkpoint 512, features 2048"):
        evaluate(tmp_path / "no-record.ckpt", features=other, accelerator="cpu")


def test_features_of_the_same_cnn_at_another_scale_are_rescaled_to_the_checkpoints(trained_run, tmp_path):
    """A features file's scale is 1/RMS of its own first batch, so another dataset's file (same CNN)
    has another: evaluating on one was refused as "not made by the CNN" of the checkpoint."""
    import h5py

    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    original = Path(json.loads((trained_run / "metrics.json").read_text())["features"])
    doubled = tmp_path / "doubled.h5"  # the same images, stored at twice the scale
    shutil.copy(original, doubled)
    with h5py.File(doubled, "r+") as file:
        file["features"][...] = file["features"][...] * 2  # a power of two: exact in float16
        file.attrs["feature_scale"] = file.attrs["feature_scale"] * 2
    assert FeatureFile(doubled).cnn_record()["feature_scale"] == 2 * FeatureFile(original).cnn_record()[
        "feature_scale"]
    expected = evaluate(checkpoint, features=original, split="val", output=tmp_path / "a", accelerator="cpu",
                        meteor=False)
    rescaled = evaluate(checkpoint, features=doubled, split="val", output=tmp_path / "b", accelerator="cpu",
                        meteor=False)
    assert (tmp_path / "b" / "results.json").read_text() == (tmp_path / "a" / "results.json").read_text()
    assert rescaled["scores"] == expected["scores"]
    # a checkpoint that records no CNN: its features are taken as they are (not x 1/the file's scale)
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    del state["hyper_parameters"]["cnn"]
    torch.save(state, tmp_path / "no-record.ckpt")
    evaluate(tmp_path / "no-record.ckpt", features=original, split="val", output=tmp_path / "c",
             accelerator="cpu", meteor=False)
    assert (tmp_path / "c" / "results.json").read_text() == (tmp_path / "a" / "results.json").read_text()
    # the same random CNN on other images is another network: normalised on those
    other = prepare(settings_of(compose_config("dataset.num_images=70", "dataset.seed=5",
                                               data_root=tmp_path / "data")))[1]
    with pytest.raises(CheckpointError, match="calibration_paths: the checkpoint's random CNN"):
        evaluate(checkpoint, features=other, split="val", accelerator="cpu", meteor=False)


def test_the_runs_own_file_rebuilt_for_other_records_is_refused_and_a_named_one_is_not(trained_run, tmp_path):
    """The run's features file, re-extracted in place for other dataset options (as earlier versions
    did), was evaluated silently: its test split was another set of images than the run's."""
    import h5py

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(trained_run / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    metrics = json.loads((trained_run / "metrics.json").read_text())
    rebuilt = tmp_path / "rebuilt.h5"
    shutil.copy(metrics["features"], rebuilt)
    with h5py.File(rebuilt, "r+") as file:
        identity = json.loads(file.attrs["identity"])
        file.attrs["identity"] = json.dumps({**identity, "records": "0123456789abcdef"}, sort_keys=True)
    (run / "metrics.json").write_text(json.dumps({**metrics, "features": str(rebuilt)}))
    with pytest.raises(CheckpointError, match=rf"{rebuilt}, the features file this run trained on, now "
                       r"holds other images or captions \(records 0123456789abcdef, the run's "
                       rf"{identity['records']}\): its val split may not be the run's"):
        evaluate(run / "checkpoints" / "last.ckpt", split="val", accelerator="cpu", meteor=False)
    named = evaluate(run / "checkpoints" / "last.ckpt", features=rebuilt, split="val",
                     output=tmp_path / "named", accelerator="cpu", meteor=False)
    assert named["images"] > 0  # a file the user names (another dataset's, say) is theirs to choose
    # the run's records' own file beside it (a run without metrics.json is pointed at the default one)
    from captioner.features.cache import records_path

    own = records_path(rebuilt, identity["records"])
    shutil.copy(metrics["features"], own)
    found = evaluate(run / "checkpoints" / "last.ckpt", split="val", output=tmp_path / "own",
                     accelerator="cpu", meteor=False)
    assert found["features"] == str(own)


def test_results_name_coco_images_by_the_integer_id_coco_caption_matches():
    """The COCO readers know an image by its file's stem; coco-caption's loadRes wants COCO's own
    integer id, or it refuses the results file."""
    from captioner.inference.evaluate import results_image_id

    assert results_image_id("COCO_val2014_000000391895") == 391895
    assert results_image_id("COCO_train2014_000000000009") == 9
    assert results_image_id("1000092795") == 1000092795  # Flickr30k
    assert results_image_id("1000268201_693b08cb0e") == "1000268201_693b08cb0e"  # Flickr8k
    assert results_image_id("COCO_val2014_x") == "COCO_val2014_x"
