"""The settings stage: the config read once, every bad value refused before any work, typed values
for the stages below (which never see the config)."""

from __future__ import annotations

import ast
import hashlib
from operator import attrgetter

import pytest
from omegaconf import open_dict

from captioner.errors import ConfigError
from captioner.features.backbones import ARCHITECTURES, weights_source
from captioner.model.decoding import STRATEGIES
from captioner.runs.run import run
from captioner.settings import choices, read_settings
from captioner.sources import SOURCES
from captioner.training.lr_schedule import SCHEDULES
from captioner.training.self_critical import BASELINES
from tests.conftest import REPO, TINY, command, compose_config, python, settings_of, train_command


def test_the_table_of_choices_is_the_one_the_code_implements():
    assert set(choices.CNN_NAMES) == set(ARCHITECTURES)
    assert set(choices.DATASET_SOURCES) == set(SOURCES)
    assert tuple(STRATEGIES) == choices.DECODE_STRATEGIES
    assert tuple(SCHEDULES) == choices.LR_SCHEDULES and tuple(BASELINES) == choices.SCST_BASELINES


def test_the_default_config_reads_into_typed_values(tmp_path):
    settings = settings_of(compose_config(data_root=tmp_path))
    assert settings.cnn.name == "vgg16" and settings.cnn.input_size == 64 and settings.cnn.random_weights
    assert settings.dataset.root == tmp_path / "shapes" and settings.dataset.options["num_images"] == 60
    assert settings.model.cell == "gru" and settings.model.lr_schedule.name == "constant"
    assert settings.loggers[0].kind == "csv" and settings.trainer.options["max_epochs"] == 1
    assert settings.config["model"]["embed_dim"] == 32  # plain data for W&B and metrics.json


# Each of these used to fail only after feature extraction (lr_schedule, compile) or after the
# whole cross-entropy fit (scst.*); now before anything is written.
LATE_CHECKS = [
    (["model.lr_schedule.name=cosin"], "model.lr_schedule.name='cosin': expected constant, cosine or "
                                       "plateau"),
    (["model.compile=maybe"], "model.compile='maybe': expected auto, true or false"),
    (["scst.enabled=true", "scst.baseline=gredy"], "scst.baseline='gredy': expected mean or greedy"),
    (["scst.enabled=true", "scst.samples=1"], "scst.baseline=mean needs scst.samples >= 2"),
    (["scst.enabled=true", "scst.temperature=0"], "scst.temperature=0: expected a number > 0"),
    (["scst.enabled=true", "scst.patience=-1"], "scst.patience=-1"),
    (["scst.enabled=true", "scst.from_checkpoint=no/xe.ckpt"], "no such checkpoint file"),
    (["trainer.max_epochs=-1", "model.lr_schedule.name=cosine"], "needs a finite trainer.max_epochs"),
    (["trainer.precision=bf17"], "trainer.precision='bf17': expected one of"),
    (["model.scheduled_sampling.max_prob=2"], "model.scheduled_sampling.max_prob=2: expected a probability"),
    (["cnn=mobilenet_v2", "cnn.weights=IMAGENET1K_V1", "cnn.trainable_blocks=4"],
     "cnn.trainable_blocks=4: mobilenet_v2 lists 3 top blocks to train; choose 0-3"),
    (["cnn.trainable_blocks=1"], "cnn.trainable_blocks=1 fine-tunes pretrained blocks, but cnn.weights=null"),
    # each of these failed only after the features were extracted (or with a traceback)
    (["+trainer.max_epoch=5"], "trainer.max_epoch: not an option of Lightning's Trainer (did you mean "
                               "trainer.max_epochs"),
    (["trainer.devices=two"], "trainer.devices='two': expected a number of devices"),
    (["trainer.devices=0"], "trainer.devices=0: expected a number of devices"),
    (["trainer.accelerator=cpu", "trainer.devices=-1"], "trainer.devices=-1 means every GPU, but "
                                                         "trainer.accelerator=cpu"),
    (["+trainer.default_root_dir=elsewhere"], "trainer.default_root_dir: set by the run itself"),
    (["cnn.name=[vgg16]"], r"cnn.name=\['vgg16'\]: expected one of"),
    (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0: expected an integer >= 1"),
    (["cnn=inception_v3", "cnn.input_size=64"], "cnn.input_size=64: expected an integer >= 75"),
    (["features_path=5"], "features_path=5: expected a path"),
    (["ckpt_path=true"], "ckpt_path=True: expected a path or last"),
    (["seed=4294967296"], "seed=4294967296: expected an integer from 0 to 4294967295"),
    (["scst.from_checkpoint=xe.ckpt"], "xe.ckpt': only with scst.enabled=true"),
]


@pytest.mark.parametrize("overrides, message", LATE_CHECKS)
def test_a_bad_value_is_refused_before_any_features_or_checkpoint_are_written(tmp_path, overrides, message):
    cfg = compose_config(*overrides, data_root=tmp_path / "data")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(cfg, run_dir=tmp_path / "run", base_dir=tmp_path)
    assert not (tmp_path / "data").exists()  # no images generated, nothing extracted
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_command_line_gets_one_line_and_exit_2_for_a_bad_scst_value(tmp_path):
    result = command(tmp_path, train_command(tmp_path / "data", "scst.enabled=true", "scst.baseline=gredy",
                                             "model.compile=maybe"), check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "scst.baseline='gredy'" in result.stderr and "model.compile='maybe'" in result.stderr  # both
    assert not (tmp_path / "data" / "features").exists()


def test_a_relative_weights_path_starts_where_the_user_launched_before_it_is_hashed(tmp_path):
    weights = tmp_path / "launch" / "w" / "vgg.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"weights of the launch folder")
    cfg = compose_config("cnn.weights_path=w/vgg.pth", data_root=tmp_path / "data")
    settings = read_settings(cfg, tmp_path / "launch")
    assert settings.cnn.weights_path == weights
    source = weights_source(settings.cnn)
    assert source.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    with pytest.raises(ConfigError, match="cnn.weights_path='.*w/vgg.pth': no such file"):
        read_settings(cfg, tmp_path)  # launched elsewhere: that folder has no w/vgg.pth


def test_every_problem_is_named_at_once(tmp_path):
    cfg = compose_config(data_root=tmp_path)
    with open_dict(cfg):
        cfg.decode.beam_size, cfg.model.lr, cfg.rnn.cell = 0, -1, "lsmt"
    with pytest.raises(ConfigError) as error:
        read_settings(cfg, tmp_path)
    problems = str(error.value).split("; ")
    assert len(problems) == 3 and "rnn.cell='lsmt': expected gru or lstm" in problems


BELOW_SETTINGS = ("features", "data", "model", "scoring", "training", "inference", "sources")


def test_no_stage_below_the_run_sees_the_config():
    offenders = []
    for stage in BELOW_SETTINGS:
        for path in (REPO / "captioner" / stage).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                imported = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                            [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(name.split(".")[0] in ("omegaconf", "hydra") for name in imported):
                    offenders.append(f"{path.relative_to(REPO)} imports {imported}")
            if "DictConfig" in path.read_text():
                offenders.append(f"{path.relative_to(REPO)} names DictConfig")
    assert not offenders, "\n".join(offenders)


def test_tiny_overrides_are_valid_settings(tmp_path):
    assert "cnn=vgg16" in TINY
    read_settings(compose_config(data_root=tmp_path), tmp_path)  # raises on any problem


def test_the_report_reads_run_configs_only_through_the_run_records():
    """compare/ gets runs from records/ (RunSummary, CaptionEntry, RunFolder); only the Hydra hook
    that starts it at a sweep's end sees Hydra's config."""
    offenders = []
    for path in (REPO / "captioner" / "compare").glob("*.py"):
        text = path.read_text()
        reads_config = "omegaconf" in text or "import hydra" in text or "from hydra" in text
        if path.name != "sweep_end.py" and reads_config:
            offenders.append(f"{path.name} reads configs itself")
        if ".config()" in text or "read_metrics" in text or "json.loads" in text:
            offenders.append(f"{path.name} reads a run's files itself")
    assert not offenders, offenders


@pytest.mark.parametrize("command_name", ["captioner.evaluate", "captioner.caption"])
def test_the_decoding_flags_are_checked_before_the_checkpoint_is_read(tmp_path, command_name):
    images = [str(tmp_path)] if command_name == "captioner.caption" else []
    result = python(tmp_path, "-m", command_name, str(tmp_path / "none.ckpt"), *images, "--beam-size", "0",
                    "--length-penalty", "-1", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--beam-size 0: expected an integer >= 1" in result.stderr
    assert "--length-penalty -1.0: expected a number >= 0" in result.stderr
    assert "none.ckpt" not in result.stderr and "Traceback" not in result.stderr


# (override, the setting it sets, the value read): each as earlier versions read it
TAKEN_BEFORE = [
    ("early_stopping.patience=0", "early_stopping_patience", None),  # 0: no early stopping
    ("progress_every_s=0", "progress_every_s", 0.0),
    ("text.min_word_count=0", "text.min_word_count", 0),
    ("trainer.precision=null", "trainer.precision", "32-true"),
    ("trainer.devices='1'", "trainer.devices", "1"),
    ("trainer.devices=auto", "trainer.devices", "auto"),
    ("trainer.devices=2", "trainer.devices", 2),
    ("trainer.devices='0,1'", "trainer.devices", "0,1"),
    ("trainer.devices=[0,1]", "trainer.devices", [0, 1]),
    ("cnn.input_size=32", "cnn.input_size", 32),
    ("seed=4294967295", "seed", 4294967295),
]


@pytest.mark.parametrize(("override", "setting", "expected"), TAKEN_BEFORE,
                         ids=[override for override, _, _ in TAKEN_BEFORE])
def test_values_earlier_versions_took_are_still_taken(tmp_path, override, setting, expected):
    settings = read_settings(compose_config(override, data_root=tmp_path), tmp_path)
    value = attrgetter(setting)(settings)
    assert (value, type(value)) == (expected, type(expected))  # 2, not "2"; 0.0, not None
    if setting == "trainer.devices":  # as Lightning's Trainer is given it
        assert settings.trainer.options["devices"] == expected


def test_a_path_that_cannot_be_resolved_is_a_one_line_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CAPTIONER_TEST_UNSET", raising=False)
    cfg = compose_config("data_root=${oc.env:CAPTIONER_TEST_UNSET}", data_root=None)
    with pytest.raises(ConfigError, match="CAPTIONER_TEST_UNSET"):
        read_settings(cfg, tmp_path)


def test_the_plain_pytorch_stages_load_no_config_library(tmp_path):
    script = ("import sys, captioner.model.decoding, captioner.training.lr_schedule, "
              "captioner.training.self_critical; print('omegaconf' in sys.modules, 'hydra' in sys.modules)")
    assert python(tmp_path, "-c", script).stdout.split() == ["False", "False"]
