"""`captioner.evaluate`: scores any split of a checkpoint, checkable with coco-caption's own code;
checkpoints are plain data and load without running pickled code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from captioner.checkpoint_io import CheckpointError, load_module
from captioner.evaluate import evaluate
from captioner.features import FeatureFile
from captioner.prepare import prepare
from tests.conftest import compose_config
from tests.test_metrics import _pycocoevalcap_directly


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


def test_without_java_the_evaluation_finishes_with_one_warning(trained_run, tmp_path):
    java_dir = os.path.realpath(os.path.dirname(shutil.which("java")))
    no_java = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                              if os.path.realpath(d) != java_dir)
    scores = {}
    for name, path in (("java", os.environ["PATH"]), ("none", no_java)):
        result = subprocess.run(
            [sys.executable, "-m", "captioner.evaluate", str(trained_run / "checkpoints" / "last.ckpt"),
             "--accelerator", "cpu", "--output", str(tmp_path / name)],
            capture_output=True, text=True, timeout=300, env={**os.environ, "PATH": path})
        assert result.returncode == 0, result.stderr[-3000:]
        scores[name] = json.loads((tmp_path / name / "scores.json").read_text())["scores"]
        if name == "none":
            assert result.stderr.count("java not found on PATH") == 1
            assert "install" in result.stderr
    assert "meteor" in scores["java"] and "meteor" not in scores["none"]
    others = {k: v for k, v in scores["java"].items() if k != "meteor"}
    assert scores["none"] == pytest.approx(others, abs=1e-9)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))  # what a hostile checkpoint would run on load


def test_a_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"payload": _Payload(marker)}}, hostile)
    with pytest.raises(CheckpointError, match="hostile.ckpt: not a captioner checkpoint"):
        load_module(hostile)
    assert not marker.exists()


def test_a_checkpoint_is_weights_and_json_metadata(trained_run):
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    metadata = json.loads(json.dumps(checkpoint["hyper_parameters"]))
    assert metadata["vocabulary"][:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert metadata["encoder"]["cnn"] == "vgg16" and metadata["encoder"]["feature_scale"] > 0
    assert all(isinstance(v, torch.Tensor) for v in checkpoint["state_dict"].values())


def test_features_from_another_cnn_are_refused(trained_run, tmp_path):
    cfg = compose_config("cnn=resnet101", "cnn.input_size=64", data_root=tmp_path / "data")
    _, other = prepare(cfg, tmp_path)
    with pytest.raises(CheckpointError, match="cnn: checkpoint 'vgg16', features 'resnet101'"):
        evaluate(trained_run / "checkpoints" / "last.ckpt", features=other, accelerator="cpu")
