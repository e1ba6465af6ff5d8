"""The pieces of a run, one at a time: config checks, absolute paths, the run folder, resume,
the fast path, unique folders, preemption, the training order and the exact-resume state."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from lightning_fabric.plugins import TorchCheckpointIO
from omegaconf import OmegaConf, open_dict

from captioner import paths
from captioner.data.training_order import EpochShuffle, ResumableDataLoader
from captioner.data.vocabulary import Vocabulary
from captioner.errors import ConfigError
from captioner.features.weights_source import WeightsSource
from captioner.launch.ddp_under_hydra import RESUME_ENV, ddp_job
from captioner.launch.unique_folders import claim_folder
from captioner.model.compiled import COMPILE_SECONDS, SAVED_SECONDS_PER_STEP, compile_pays
from captioner.model.tokens import SPECIAL_TOKENS
from captioner.paths import default_features_path, write_atomically
from captioner.records.run_folder import RunFolder
from captioner.records.run_summary import RunSummary
from captioner.runs.resume import (
    check_resumable,
    check_vocabulary,
    resolve_checkpoint,
    resolve_checkpoint_of_rank,
)
from captioner.runs.run import run
from captioner.settings import CnnSettings, read_settings
from captioner.settings.reading import with_absolute_paths
from captioner.trainer_setup.fast_path import fast_path, planned_steps
from captioner.training import checkpoint_files
from captioner.training.checkpoint_files import AtomicCheckpointIO
from captioner.training.checkpoint_loading import CheckpointError, CheckpointNotFoundError
from captioner.training.checkpoint_record import read_checkpoint_record
from captioner.training.mid_epoch_checkpoint import MOST_BATCHES_BETWEEN, batches_until_next_agreement
from captioner.training.preemption import Preempted, PreemptionSignals
from captioner.training.progress_lines import duration
from captioner.training.self_critical_stage import stage_summary
from tests.conftest import CONF, compose_config, features_file_of, record_syncs, settings_of

# --- config checks and paths ---


def test_a_valid_config_has_no_problems_and_each_bad_value_is_named(tmp_path):
    cfg = compose_config(data_root=tmp_path)
    read_settings(cfg, tmp_path)
    with open_dict(cfg):
        cfg.decode.beam_size = 0
        cfg.model.dropout = 1.5
        cfg.cnn.weights_path = str(tmp_path / "missing.pth")
    with pytest.raises(ConfigError) as error:
        read_settings(cfg, tmp_path)
    problems = str(error.value).split("; ")
    assert len(problems) == 3
    assert "decode.beam_size=0: expected an integer >= 1" in problems
    assert any(p.startswith("model.dropout=1.5: expected a number in [0, 1)") for p in problems)
    assert any("missing.pth" in p and "no such file" in p for p in problems)


@pytest.mark.parametrize("overrides, cnn, input_size", [
    ([], "vgg16", 128),  # the default job: a random VGG16 at the images' own size
    (["cnn=inception_v3"], "inception_v3", 128),  # the command line still chooses the CNN
    (["cnn=inception_v3", "cnn.input_size=299"], "inception_v3", 299),
    (["dataset=flickr8k"], "inception_v3", 299),  # real photos keep the prior study's CNN and size
])
def test_the_shapes_default_job_uses_vgg16_at_128_px_and_the_command_line_wins(overrides, cnn, input_size):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    assert (cfg.cnn.name, cfg.cnn.input_size) == (cnn, input_size)
    if not overrides:
        assert cfg.cnn.weights is None and cfg.dataset.num_images == 1500 and cfg.trainer.max_epochs == 8


def test_path_options_are_made_absolute_once_from_the_launch_folder(tmp_path):
    cfg = compose_config("features_path=feats/x.h5", "cnn.weights_path=w/vgg.pth", "ckpt_path=last",
                         "scst.from_checkpoint='~/xe.ckpt'")
    with open_dict(cfg):
        cfg.data_root = "data"
    resolved = with_absolute_paths(cfg, tmp_path)
    assert resolved.data_root == str(tmp_path / "data")
    assert resolved.dataset.root == str(tmp_path / "data" / "shapes")  # interpolated from data_root
    assert resolved.features_path == str(tmp_path / "feats" / "x.h5")
    assert resolved.cnn.weights_path == str(tmp_path / "w" / "vgg.pth")
    assert resolved.scst.from_checkpoint == str(Path("~/xe.ckpt").expanduser())
    assert resolved.ckpt_path == "last"  # a keyword, not a path
    assert cfg.data_root == "data"  # the original is left as it was


# --- the run folder ---


def test_the_run_folder_finds_the_features_from_metrics_or_from_the_recorded_config(tmp_path):
    folder = RunFolder(tmp_path / "run")
    (folder.path / ".hydra").mkdir(parents=True)
    assert folder.features_file() is None  # nothing recorded yet
    cfg = compose_config()
    cfg.data_root = "data"  # relative: from where the run started
    OmegaConf.save(cfg, folder.config_file)
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"cwd": str(tmp_path / "launch")}}}),
                   folder.hydra_file)
    expected = features_file_of(tmp_path / "launch" / "data")
    assert expected.name.startswith("shapes-vgg16-") and folder.features_file() == expected
    earlier = default_features_path(tmp_path / "launch" / "data", "shapes", "vgg16")
    earlier.parent.mkdir(parents=True)
    earlier.touch()  # named as before keys, and the keyed one absent: the run trained on this one
    assert folder.features_file() == earlier
    RunSummary(status="running", features="/elsewhere/f.h5").write(folder.metrics)
    assert folder.features_file() == Path("/elsewhere/f.h5")
    assert RunFolder.of_checkpoint(folder.last_checkpoint) == folder
    folder.metrics.write_text('{"status": "runn')  # half written: a reader must not take it as JSON
    with pytest.raises(ValueError, match=f"^{re.escape(str(folder.metrics))}: not valid JSON"):
        folder.summary()
    earlier.unlink()
    assert folder.features_file() == expected


def test_a_summary_of_another_version_keeps_its_unknown_keys_and_reads_missing_ones_as_defaults(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"status": "completed", "test": {"cider": 1.5}, "history": null, '
                    '"from_the_future": [1, 2]}')
    summary = RunSummary.read(path)
    assert summary.status == "completed" and summary.test == {"cider": 1.5} and summary.epochs is None
    assert summary.history == []  # a null where a list belongs reads as empty
    summary.write(path)
    assert json.loads(path.read_text())["from_the_future"] == [1, 2]


def test_write_atomically_never_leaves_half_a_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_atomically(target, "old")

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_atomically(target, "new")
    assert target.read_text() == "old"



def test_a_file_written_whole_is_on_the_disk_before_its_rename_and_the_rename_before_return(tmp_path,
                                                                                          monkeypatch):
    # A crash or power cut, not only a killed process: some file systems commit a rename before
    # the data, and the file is then empty after the reboot.
    events: list = []
    record_syncs(monkeypatch, events)
    target = tmp_path / "metrics.json"
    write_atomically(target, "new")
    staging = events[0][1]  # this writer's own staging file
    assert Path(staging).parent == tmp_path and Path(staging).name.startswith(".metrics.json.partial-")
    assert events == [("fsync", staging), ("replace", staging, str(target)), ("fsync", str(tmp_path))]
    assert target.read_text() == "new"


def staging_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def test_a_write_that_starts_while_another_write_of_the_file_is_in_progress_leaves_both_whole(tmp_path,
                                                                                             monkeypatch):
    # A requeued job beside the old one, or a double launch, writing one metrics.json: with one
    # staging name per file, the second writer's rename took the first one's staging file and the
    # first died with FileNotFoundError.
    target = tmp_path / "metrics.json"
    first, second = "first " * 1000, "second " * 1000
    sync = paths.sync_to_disk
    overlapped = []

    def sync_while_another_writes(path):
        sync(path)
        if not overlapped:  # the first write, staged and not yet renamed: a second writer begins
            overlapped.append(path)
            write_atomically(target, second)
            assert target.read_text() == second

    monkeypatch.setattr(paths, "sync_to_disk", sync_while_another_writes)
    write_atomically(target, first)
    assert overlapped and target.read_text() == first  # whole; the last rename wins
    assert staging_files(tmp_path) == []


def test_a_checkpoint_saved_while_another_save_of_the_file_is_in_progress_leaves_both_whole(tmp_path,
                                                                                           monkeypatch):
    # Two torch.save calls into one staging file could rename an interleaved checkpoint into place.
    target = tmp_path / "checkpoints" / "last.ckpt"
    first, second = {"global_step": 1, "w": torch.arange(1000)}, {"global_step": 2, "w": -torch.arange(1000)}
    replace = checkpoint_files.replace_durably
    overlapped = []

    def replace_while_another_saves(staging, path):
        if not overlapped:  # the first save, staged and not yet renamed: a second one begins
            overlapped.append(staging)
            AtomicCheckpointIO().save_checkpoint(second, target)
            assert torch.load(target, weights_only=True)["global_step"] == 2
        replace(staging, path)

    monkeypatch.setattr(checkpoint_files, "replace_durably", replace_while_another_saves)
    AtomicCheckpointIO().save_checkpoint(first, target)
    saved = torch.load(target, weights_only=True)
    assert overlapped and saved["global_step"] == 1 and torch.equal(saved["w"], first["w"])
    assert staging_files(target.parent) == []


def _write_text(target: Path, text: str) -> None:
    write_atomically(target, text)


def _save_checkpoint(target: Path, text: str) -> None:
    AtomicCheckpointIO().save_checkpoint({"text": text}, target)


def _read(target: Path) -> str:
    return target.read_text() if target.suffix == ".json" else torch.load(target, weights_only=True)["text"]


WRITERS = [pytest.param("metrics.json", _write_text, id="write_atomically"),
           pytest.param("last.ckpt", _save_checkpoint, id="AtomicCheckpointIO")]


@pytest.mark.parametrize(("name", "write"), WRITERS)
def test_a_write_that_fails_midway_leaves_the_previous_file_and_no_staging_file(tmp_path, monkeypatch,
                                                                                name, write):
    target = tmp_path / name
    write(target, "old")
    real_write_text, real_save = Path.write_text, TorchCheckpointIO.save_checkpoint

    def half_then_disk_full(self, text, *args, **kwargs):
        real_write_text(self, text[:len(text) // 2])
        raise OSError(28, "No space left on device")

    def half_checkpoint_then_disk_full(self, checkpoint, path, storage_options=None):
        real_save(self, checkpoint, path, storage_options)
        with open(path, "r+b") as f:
            f.truncate(10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_disk_full)
    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", half_checkpoint_then_disk_full)
    with pytest.raises(OSError, match="No space left"):
        write(target, "new " * 1000)
    monkeypatch.undo()
    assert _read(target) == "old"
    assert staging_files(tmp_path) == []


@pytest.mark.parametrize(("name", "write"), WRITERS)
def test_a_staging_file_a_killed_writer_of_this_machine_left_is_removed_by_the_next_write(tmp_path, name,
                                                                                         write):
    target = tmp_path / name
    this_host = paths.staging_path(target).name.rsplit("-", 1)[0]  # .{name}.partial-{host}
    dead = f"{this_host}-4194999.0"  # above the largest pid Linux gives: no such process
    live = f"{this_host}-{os.getppid()}.3"  # a writer still at work
    elsewhere = f".{name}.partial-another-machine-4194999.0"  # its pid means nothing here
    alike = f"{this_host}-2-4194999.0"  # a machine named like this one, and more
    other_file = f".other{name}.partial-{this_host.rsplit('partial-', 1)[1]}-4194999.0"
    for left in (dead, live, elsewhere, alike, other_file):
        (tmp_path / left).write_bytes(b"half")
    write(target, "new")
    assert _read(target) == "new"
    assert staging_files(tmp_path) == sorted([live, elsewhere, alike, other_file])


def test_a_set_a_killed_writer_of_this_machine_left_is_removed_and_another_machines_kept(tmp_path):
    (tmp_path / "report.md").write_text("old")
    this_host = paths.staging_path(tmp_path / "report.md.set").name.rsplit("-", 1)[0]
    dead, legacy = f"{this_host}-4194999.0", ".report.md.set.partial-4194999"  # legacy: pid only
    live, elsewhere = f"{this_host}-{os.getppid()}.0", ".report.md.set.partial-another-machine-4194999.0"
    for left in (dead, legacy, live, elsewhere):
        (tmp_path / left).mkdir()
        (tmp_path / left / "report.md").write_text("half")
    with paths.written_as_a_set(tmp_path, last="report.md") as staging:
        assert staging.name.startswith(f"{this_host}-{os.getpid()}.")
        (staging / "report.md").write_text("new")
    assert (tmp_path / "report.md").read_text() == "new"
    assert staging_files(tmp_path) == sorted([live, elsewhere])

# --- resume ---


def _run_with_checkpoint(root: Path, name: str, overrides: list[str],
                         config_name: str = "train") -> RunFolder:
    folder = RunFolder(root / "outputs" / name)
    folder.checkpoints.mkdir(parents=True)
    folder.overrides_file.parent.mkdir()
    torch.save({"global_step": 1}, folder.last_checkpoint)
    folder.overrides_file.write_text(yaml.safe_dump(overrides))
    folder.hydra_file.write_text(yaml.safe_dump({"hydra": {"job": {"config_name": config_name}}}))
    return folder


def test_ckpt_path_last_picks_the_newest_earlier_run_with_the_same_overrides(tmp_path):
    here = RunFolder(tmp_path / "outputs" / "now")
    older = _run_with_checkpoint(tmp_path, "older", ["rnn=lstm"])
    newer = _run_with_checkpoint(tmp_path, "newer", ["rnn=lstm", "ckpt_path=last"])
    _run_with_checkpoint(tmp_path, "other", ["rnn=gru"])
    os.utime(older.last_checkpoint, (time.time() - 100, time.time() - 100))
    chosen = resolve_checkpoint("last", here, ["rnn=lstm", "ckpt_path=last"], tmp_path)
    assert chosen.path == newer.last_checkpoint and chosen.global_step == 1
    with pytest.raises(CheckpointNotFoundError, match="ckpt_path=last: neither this run's folder"):
        resolve_checkpoint("last", here, ["rnn=gru", "model.lr=1"], tmp_path)
    own = _run_with_checkpoint(tmp_path, "now-own", [])
    assert resolve_checkpoint("last", own, ["rnn=lstm"], tmp_path).path == own.last_checkpoint
    assert resolve_checkpoint(None, here, [], tmp_path) is None
    assert resolve_checkpoint(str(older.last_checkpoint), here, [], tmp_path).path == older.last_checkpoint
    with pytest.raises(CheckpointNotFoundError, match="no such checkpoint file"):
        resolve_checkpoint(str(tmp_path / "nope.ckpt"), here, [], tmp_path)
    # one run of a resumed sweep that never began: it starts fresh instead of failing, and does not
    # take another sweep's run with the same overrides (other defaults, maybe finished)
    assert resolve_checkpoint("last", here, ["rnn=gru", "model.lr=1"], tmp_path, in_sweep=True) is None
    assert resolve_checkpoint("last", here, ["rnn=lstm", "ckpt_path=last"], tmp_path, in_sweep=True) is None
    assert resolve_checkpoint("last", own, ["rnn=lstm"], tmp_path, in_sweep=True).path == own.last_checkpoint


def test_a_ddp_rank_that_rank_0_started_resumes_as_rank_0_decided(tmp_path, monkeypatch):
    # The ranks run the sweep's job as a single run: `last` resolved there took another sweep's run
    # with the same overrides, or failed where rank 0 started fresh (and took rank 0 down with it).
    here = RunFolder(tmp_path / "outputs" / "sweep" / "0")
    other = _run_with_checkpoint(tmp_path, "other-sweep", ["rnn=lstm"])
    with ddp_job(None):
        assert os.environ[RESUME_ENV] == ""
        monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning gives the rank it starts
        assert resolve_checkpoint_of_rank("last", here, ["rnn=lstm"], tmp_path) is None
        assert resolve_checkpoint_of_rank("last", here, ["rnn=gru"], tmp_path) is None  # no error
        monkeypatch.setenv("LOCAL_RANK", "0")  # rank 0 itself resolves as before
        assert resolve_checkpoint_of_rank("last", here, ["rnn=lstm"], tmp_path).path == other.last_checkpoint
    assert RESUME_ENV not in os.environ  # the next job of the sweep starts clean
    with ddp_job(str(other.last_checkpoint)):
        monkeypatch.setenv("LOCAL_RANK", "1")
        assert resolve_checkpoint_of_rank("last", here, ["rnn=gru"], tmp_path, in_sweep=True).path == \
            other.last_checkpoint


def test_ckpt_path_last_does_not_take_a_run_of_another_primary_config_with_the_same_overrides(tmp_path):
    """`--config-name=my_experiment rnn=lstm` is another experiment than `rnn=lstm`; matching the
    overrides alone resumed one from the other."""
    here = RunFolder(tmp_path / "outputs" / "now")
    default = _run_with_checkpoint(tmp_path, "train-lstm", ["rnn=lstm"])
    other = _run_with_checkpoint(tmp_path, "experiment-lstm", ["rnn=lstm"], config_name="my_experiment")
    os.utime(default.last_checkpoint, (time.time() - 100, time.time() - 100))  # the other one is newer
    assert resolve_checkpoint("last", here, ["rnn=lstm"], tmp_path, config_name="train").path \
        == default.last_checkpoint
    assert resolve_checkpoint("last", here, ["rnn=lstm"], tmp_path, config_name="my_experiment").path \
        == other.last_checkpoint
    with pytest.raises(CheckpointNotFoundError, match="an earlier run of config 'experiment_b'"):
        resolve_checkpoint("last", here, ["rnn=lstm"], tmp_path, config_name="experiment_b")


def test_a_completed_run_resumed_with_the_same_settings_is_kept_and_with_more_epochs_trains_on(tiny_cfg,
                                                                                            tmp_path):
    run(tiny_cfg, tmp_path / "run")
    finished = (tmp_path / "run" / "metrics.json").read_bytes()
    with open_dict(tiny_cfg):
        tiny_cfg.ckpt_path = "last"
    kept = run(tiny_cfg, tmp_path / "run")
    assert (tmp_path / "run" / "metrics.json").read_bytes() == finished  # not trained or tested again
    assert kept.status == "completed" and kept.resumed_from is None
    tiny_cfg.trainer.max_epochs += 1
    longer = run(tiny_cfg, tmp_path / "run")
    assert longer.epochs == tiny_cfg.trainer.max_epochs and longer.resumed_from is not None


def test_a_job_slurm_started_again_goes_on_from_its_folders_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    """A job requeued by SLURM (after a preemption) reruns the same command, without ckpt_path=last:
    it trained the run again from its first epoch."""
    run(tiny_cfg, tmp_path / "run")
    tiny_cfg.trainer.max_epochs += 1
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the job's first start: no resume asked, none made
    fresh = run(tiny_cfg, tmp_path / "fresh")
    assert fresh.resumed_from is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    requeued = run(tiny_cfg, tmp_path / "run")
    assert requeued.resumed_from == str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert requeued.epochs == tiny_cfg.trainer.max_epochs
    assert run(tiny_cfg, tmp_path / "other").resumed_from is None  # a folder with no checkpoint: fresh
    with open_dict(tiny_cfg):  # a run that started from another run's checkpoint goes on from its own
        tiny_cfg.ckpt_path = str(tmp_path / "fresh" / "checkpoints" / "last.ckpt")
    tiny_cfg.trainer.max_epochs += 1
    again = run(tiny_cfg, tmp_path / "run")
    assert again.resumed_from == str(tmp_path / "run" / "checkpoints" / "last.ckpt")


# --- the fast path, folders, weights ---


@pytest.mark.parametrize("setting, accelerator, devices, compiled", [
    ("auto", "cpu", 1, False), (True, "cpu", 1, True), ("auto", "gpu", 1, True),
    ("auto", "gpu", 2, False), (False, "gpu", 1, False)])
def test_compile_is_decided_once_from_the_setting_and_the_devices(setting, accelerator, devices, compiled):
    cfg = compose_config()
    with open_dict(cfg):
        cfg.model.compile, cfg.trainer.accelerator, cfg.trainer.devices = setting, accelerator, devices
    fast = fast_path(settings_of(cfg), gpus=None, train_captions=10**6)  # compiling pays for so many
    assert fast.compiled is compiled
    assert fast.static_caption_length == (cfg.text.max_caption_length + 2 if compiled else None)
    assert fast.resident_device is None  # no GPU leased


@pytest.mark.parametrize("overrides, train_captions, compiled", [
    ([], 1200 * 5, False),  # the default job: 8 epochs x 93 steps, fewer than compiling costs (#25)
    (["trainer.max_epochs=7", "data.batch_size=64"], 6000 * 5, True),  # Flickr8k: 7 x 468 steps
    (["trainer.max_epochs=-1"], 6000, True),  # no bound on the steps
    (["trainer.max_epochs=100", "+trainer.max_steps=500"], 6000 * 5, False),
])
def test_auto_compiles_on_a_gpu_only_when_the_planned_steps_repay_the_compile(overrides, train_captions,
                                                                               compiled):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["trainer.accelerator=gpu", *overrides])
    settings = settings_of(cfg)
    steps = planned_steps(settings, train_captions)
    assert compile_pays(steps) is compiled
    assert fast_path(settings, gpus=None, train_captions=train_captions).compiled is compiled
    if not overrides:
        assert steps == 8 * 93 and steps * SAVED_SECONDS_PER_STEP < COMPILE_SECONDS


def test_two_claims_of_one_folder_get_two_folders(tmp_path, monkeypatch):
    monkeypatch.setattr("captioner.launch.unique_folders._claimed", {})
    first = claim_folder(str(tmp_path / "12-00-00"))
    assert claim_folder(str(tmp_path / "12-00-00")) == first  # the same process asks again
    monkeypatch.setattr("captioner.launch.unique_folders._claimed", {})  # another process
    assert claim_folder(str(tmp_path / "12-00-00")) == str(tmp_path / "12-00-00-1")


@pytest.mark.parametrize("cnn, label", [
    ({"name": "vgg16", "weights": None, "seed": 3, "calibration_images": 64},
     "random(seed=3,calibration_images=64)"),
    ({"name": "vgg16", "weights": "IMAGENET1K_V1"}, "torchvision:VGG16_Weights.IMAGENET1K_V1"),
    ({"name": "inception_resnet_v2", "weights": "tf_in1k"}, "timm:inception_resnet_v2.tf_in1k"),
    ({"name": "vgg16", "weights": None, "weights_path": "/w/my.pth"}, "file:my.pth")])
def test_the_weights_source_is_data_that_selects_the_same_weights_again(cnn, label):
    family = "timm" if cnn["name"] == "inception_resnet_v2" else "VGG16_Weights"
    source = WeightsSource.of(CnnSettings(**{**cnn, "input_size": 224}), family)
    assert source.label() == label
    assert WeightsSource.from_dict(source.as_dict()) == source
    if source.kind != "file":  # a file is found again by its path, which the caller supplies
        again = CnnSettings(name=cnn["name"], input_size=224, **source.cnn_options())
        assert WeightsSource.of(again, family) == source


# --- training pieces ---


def test_preemption_signals_are_recorded_and_the_old_handlers_restored():
    before = signal.getsignal(signal.SIGUSR1)
    signals = PreemptionSignals()
    signals.install()
    os.kill(os.getpid(), signal.SIGUSR1)
    assert signals.received == signal.SIGUSR1
    signals.restore()
    assert signal.getsignal(signal.SIGUSR1) == before
    preempted = Preempted(signal.SIGTERM, "last.ckpt")
    assert preempted.code == 128 + signal.SIGTERM and "SIGTERM" in str(preempted)


def _signal_self_before(monkeypatch, owner, name: str, signum: int = signal.SIGTERM) -> None:
    """`owner.name` sends this process `signum`, then does what it did."""
    original = getattr(owner, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, signalled)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_test_stops_the_run_as_preempted_with_the_last_checkpoint(tiny_cfg, tmp_path,
                                                                                     monkeypatch, signum):
    # After a fit, Lightning put back the handlers it had found, then the old code put back the one
    # Lightning had installed for that fit: a SIGTERM in the test ended as "failed" with exit 0.
    from captioner.training.module import CaptionModule

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    _signal_self_before(monkeypatch, CaptionModule, "on_test_epoch_start", signum)
    with pytest.raises(Preempted) as stopped:
        run(tiny_cfg, tmp_path / "run")
    assert stopped.value.code == 128 + signum
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "preempted" and signal.Signals(signum).name in metrics["error"]
    assert metrics["checkpoint"] == str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert {s: signal.getsignal(s) for s in before} == before  # the run's handlers are gone with it


def test_submitits_time_limit_signal_in_training_saves_and_stops_as_preempted(tiny_cfg, tmp_path,
                                                                              monkeypatch):
    """submitit warns a SLURM job of its time limit with SIGUSR2; its own handler raised in the middle
    of a training step: the run ended `failed`, with no checkpoint, and exit 0."""
    from captioner.training.module import CaptionModule

    called = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: called.append(signum))  # submitit's
    try:
        _signal_self_before(monkeypatch, CaptionModule, "training_step", signal.SIGUSR2)
        with pytest.raises(Preempted) as stopped:
            run(tiny_cfg, tmp_path / "run")
    finally:
        restored = signal.signal(signal.SIGUSR2, previous)
    assert stopped.value.code == 128 + signal.SIGUSR2 and not called
    assert callable(restored) and restored.__name__ == "<lambda>"  # the handler the run began with, back
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "preempted" and "SIGUSR2" in metrics["error"]
    assert metrics["checkpoint"] == str(tmp_path / "run" / "checkpoints" / "last.ckpt")


def test_a_signal_while_the_outputs_are_written_completes_the_run_then_stops(tiny_cfg, tmp_path,
                                                                          monkeypatch):
    # a sweep must not go on to its next run on a machine that is being taken away
    import captioner.runs.run as run_module

    _signal_self_before(monkeypatch, run_module, "write_run_outputs")
    with pytest.raises(Preempted) as stopped:
        run(tiny_cfg, tmp_path / "run")
    assert stopped.value.code == 128 + signal.SIGTERM
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and (tmp_path / "run" / "captions.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("hook", ["on_validation_epoch_start", "on_test_epoch_start"])
def test_a_signal_as_early_stopping_ends_the_fit_resumes_to_no_further_epoch(tiny_cfg, tmp_path, monkeypatch,
                                                                            hook):
    # lr ~ 0: nothing improves after epoch 0, so patience 1 ends the fit at epoch 1's validation,
    # where the signal comes, or in the test after it (the epoch's last.ckpt written by then).
    # Lightning does not save `should_stop`: the resume trained epoch 2.
    from captioner.training.module import CaptionModule

    original = getattr(CaptionModule, hook)

    def signalled(module):
        in_test = hook == "on_test_epoch_start"
        if (in_test or module.current_epoch == 1) and not module.trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(module)

    monkeypatch.setattr(CaptionModule, hook, signalled)
    with open_dict(tiny_cfg):
        tiny_cfg.model.lr, tiny_cfg.trainer.max_epochs, tiny_cfg.early_stopping.patience = 1e-12, 5, 1
    with pytest.raises(Preempted):
        run(tiny_cfg, tmp_path / "run")
    monkeypatch.setattr(CaptionModule, hook, original)
    with open_dict(tiny_cfg):
        tiny_cfg.ckpt_path = "last"
    resumed = run(tiny_cfg, tmp_path / "run")
    assert resumed.status == "completed" and [e["epoch"] for e in resumed.history] == [0, 1]


def test_only_early_stopping_ends_the_fit_for_a_resume_not_max_time():
    # Lightning's Timer (trainer.max_time) sets should_stop too: a resume with more time trained nothing.
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import EarlyStopping, Timer

    from captioner.training.mid_epoch_checkpoint import MidEpochCheckpoint, stopped_early

    stopper = EarlyStopping("val/cider", mode="max", patience=1)
    timed_out = SimpleNamespace(should_stop=True, callbacks=[Timer(duration="00:00:00:01"), stopper])
    assert not stopped_early(timed_out)
    stopper.stopped_epoch = 3
    assert stopped_early(timed_out)
    assert not stopped_early(SimpleNamespace(should_stop=False, callbacks=[stopper]))
    callback = MidEpochCheckpoint(Path("last.ckpt"), None)
    callback.setup(timed_out, None, "fit")
    assert callback.state_dict() == {"fit_ended": True}
    stopper.stopped_epoch = 0
    assert callback.state_dict() == {"fit_ended": False}
    stopper.wait_count = stopper.patience  # patience spent within epoch 0 (val_check_interval < 1)
    assert callback.state_dict() == {"fit_ended": True}


def _logged_train_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "csv" / "metrics.csv") as log:
        return [int(row["step"]) for row in csv.DictReader(log) if row.get("train/loss")]


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["signal", "failure"])
def test_a_resume_from_a_mid_epoch_checkpoint_logs_every_step_once(tiny_cfg, tmp_path, monkeypatch, stop):
    # The checkpoint was written at a batch's end, before Lightning logged that batch and counted it:
    # the resume dropped its row (a failure after it) or it was never logged (a signal stopped at once).
    from captioner.training.module import CaptionModule

    original = CaptionModule.training_step
    reached = []  # the first epoch's batches that began a training step

    def stopping(module, batch, batch_idx):
        if module.current_epoch == 0:
            reached.append(batch_idx)
        if stop == "signal" and module.current_epoch == 0 and batch_idx == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        if module.current_epoch == 0 and batch_idx == 3:
            raise RuntimeError("a failure after the mid-epoch checkpoint")
        return original(module, batch, batch_idx)

    monkeypatch.setattr(CaptionModule, "training_step", stopping)
    with open_dict(tiny_cfg):
        tiny_cfg.trainer.max_epochs, tiny_cfg.trainer.log_every_n_steps = 1, 1
        if stop == "failure":  # a checkpoint after every batch, no signal
            tiny_cfg.checkpoint.every_minutes = 1e-9
    if stop == "signal":
        with pytest.raises(Preempted) as stopped:
            run(tiny_cfg, tmp_path / "run")
        # saved at batch 2's end and stopped before batch 3 (whose failure would also end as Preempted)
        assert stopped.value.code == 128 + signal.SIGTERM and stopped.value.signum == signal.SIGTERM
        assert reached == [0, 1, 2] and Path(stopped.value.checkpoint).is_file()
    else:
        with pytest.raises(RuntimeError, match="a failure after the mid-epoch checkpoint"):
            run(tiny_cfg, tmp_path / "run")
        assert reached == [0, 1, 2, 3]
    monkeypatch.setattr(CaptionModule, "training_step", original)
    with open_dict(tiny_cfg):
        tiny_cfg.ckpt_path = "last"
    run(tiny_cfg, tmp_path / "run")
    steps = _logged_train_steps(tmp_path / "run")
    assert steps == list(range(len(steps))) and len(steps) > 3


def test_ddp_ranks_agree_on_saving_or_stopping_about_once_a_second_not_every_batch():
    assert batches_until_next_agreement(None) == 1  # pace not known yet: agree again after one batch
    assert batches_until_next_agreement(0.006) == 166  # a 6 ms compiled GPU step
    assert batches_until_next_agreement(0.3) == 3
    assert batches_until_next_agreement(2.5) == 1  # a slow step: every batch, as before
    assert batches_until_next_agreement(1e-7) == MOST_BATCHES_BETWEEN
    assert batches_until_next_agreement(0.01, every_s=0.5) == 50


def test_the_epoch_order_depends_on_seed_and_epoch_only_and_resumes_mid_epoch():
    shuffle = EpochShuffle(10, seed=1)
    first = list(shuffle)
    assert sorted(first) == list(range(10)) and list(EpochShuffle(10, seed=1)) == first
    shuffle.set_epoch(1)
    assert list(shuffle) != first
    loader = ResumableDataLoader(list(range(10)), batch_size=2, sampler=EpochShuffle(10, seed=1),
                                 batches_done=lambda: 3)
    assert loader.state_dict() == {"epoch": 0, "batches_done": 3}
    resumed = ResumableDataLoader(list(range(10)), batch_size=2, sampler=EpochShuffle(10, seed=1))
    resumed.load_state_dict(loader.state_dict())
    assert [int(x) for batch in resumed for x in batch] == first[6:]  # the 3 batches done are skipped
    assert [int(x) for batch in resumed for x in batch] == first  # and the next pass is whole
    finished = ResumableDataLoader(list(range(10)), batch_size=2, sampler=EpochShuffle(10, seed=1),
                                   batches_done=lambda: 5)
    assert finished.state_dict() == {"epoch": 1, "batches_done": 0}


def _items(loader) -> list[int]:
    return [int(x) for batch in loader for x in batch]


def test_under_ddp_each_rank_takes_its_share_and_resumes_at_its_own_batch():
    whole = list(EpochShuffle(11, seed=1))
    wrapped = whole + whole[:1]  # 11 items over 2 ranks: wrapped round to 12, as DistributedSampler pads
    shares = [list(EpochShuffle(11, seed=1, rank=rank, replicas=2)) for rank in (0, 1)]
    assert shares == [wrapped[0::2], wrapped[1::2]] and len(EpochShuffle(11, 1, 1, 2)) == 6
    loader = ResumableDataLoader(list(range(11)), batch_size=2, sampler=EpochShuffle(11, 1, 1, 2),
                                 batches_done=lambda: 2)
    assert loader.state_dict() == {"epoch": 0, "batches_done": 2}
    resumed = ResumableDataLoader(list(range(11)), batch_size=2, sampler=EpochShuffle(11, 1, 1, 2))
    resumed.load_state_dict(loader.state_dict())
    assert _items(resumed) == shares[1][4:]  # rank 1's first 2 batches are skipped, not the epoch's
    assert _items(resumed) == shares[1]


def test_lightning_keeps_the_resumable_order_under_ddp_instead_of_wrapping_it():
    """Lightning's DDP wraps any sampler that is not a DistributedSampler in its own, whose position
    no checkpoint records: a mid-epoch resume then trained the epoch's first batches twice."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    trainer = pl.Trainer(accelerator="cpu", strategy="ddp", devices=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False)
    ours = ResumableDataLoader(list(range(10)), batch_size=2, sampler=EpochShuffle(10, 1, 0, 2))
    plain = DataLoader(list(range(10)), batch_size=2, shuffle=True)
    rule = trainer._data_connector._requires_distributed_sampler  # Lightning's own rule (private)
    assert rule(plain) and not rule(ours)


def test_an_epoch_cut_short_by_limit_train_batches_resumes_at_the_next_epoch():
    loader = ResumableDataLoader(list(range(10)), batch_size=2, sampler=EpochShuffle(10, seed=1),
                                 batches_done=lambda: 2, epoch_batches=lambda: 2)
    assert loader.state_dict() == {"epoch": 1, "batches_done": 0}  # not epoch 0's leftover


def test_stage_summary_and_durations_read_as_documented():
    history = [{"epoch": 0, "stage": "xe"}, {"epoch": 1, "stage": "xe"}, {"epoch": 2, "stage": "scst"}]
    assert stage_summary(history) == {"xe": 2, "scst": 1}
    assert [duration(s) for s in (4.4, 75, 3720)] == ["4s", "1m15s", "1h02m"]


# --- resuming safely ---


def _copy_of(run_dir: Path, tmp_path: Path) -> RunFolder:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return RunFolder(copy)


def test_a_resume_that_changes_the_model_is_refused_naming_what_changed(trained_run):
    cfg = compose_config("rnn=lstm", "model.hidden_dim=48", "dataset.num_images=70")
    checkpoint = read_checkpoint_record(trained_run / "checkpoints" / "last.ckpt")
    with pytest.raises(ConfigError) as error:
        check_resumable(checkpoint, settings_of(cfg))
    message = str(error.value)
    assert "rnn.cell=lstm (the checkpoint has gru)" in message
    assert "model.hidden_dim=48 (the checkpoint has 64)" in message and "cannot change" in message
    same = compose_config("dataset.num_images=70", "trainer.max_epochs=9")  # epochs may change
    check_resumable(checkpoint, settings_of(same))
    assert checkpoint.global_step > 0 and checkpoint.stage == "xe"


def test_a_vocabulary_of_other_words_is_named_even_where_its_size_is_the_same():
    ours = Vocabulary([*SPECIAL_TOKENS, "a", "dog", "grass"])
    assert ours.difference(ours.words) is None
    assert ours.difference([*SPECIAL_TOKENS, "a", "cat", "mat"]) == (
        "7 words against this run's 7, the first difference at id 5: 'cat' against 'dog'")
    assert ours.difference([*SPECIAL_TOKENS, "a"]) == (
        "5 words against this run's 7, the first difference at id 5: nothing against 'dog'")


@pytest.mark.slow
def test_a_resume_or_self_critical_start_on_other_train_words_is_refused(trained_run, tmp_path):
    """The same number of other words would load into the model without a complaint, every id
    then meaning another word (say, text.max_words capping a changed train split)."""
    last = trained_run / "checkpoints" / "last.ckpt"
    checkpoint = read_checkpoint_record(last)
    trained_with = Vocabulary(checkpoint.hyper_parameters["vocabulary"])
    check_vocabulary(checkpoint, trained_with)
    swapped = Vocabulary([*trained_with.words[:4], *reversed(trained_with.words[4:])])
    with pytest.raises(ConfigError, match=rf"{last} was trained with another vocabulary .*first difference "
                                          r"at id 4.*resume with those it trained with"):
        check_vocabulary(checkpoint, swapped)
    data_root = trained_run.parent / "data"
    fewer_words = compose_config("dataset.num_images=70", "text.max_words=8", "scst.enabled=true",
                                 f"scst.from_checkpoint={last}", data_root=data_root)
    with pytest.raises(CheckpointError, match=r"trained with another vocabulary \(\d+ words against this "
                                              r"run's 12"):
        run(fewer_words, run_dir=tmp_path / "scst", base_dir=tmp_path)
    resumed = compose_config("dataset.num_images=70", "text.max_words=8", f"ckpt_path={last}",
                             data_root=data_root)
    with pytest.raises(ConfigError, match=rf"{last} was trained with another vocabulary"):
        run(resumed, run_dir=tmp_path / "resumed", base_dir=tmp_path)
    assert not (tmp_path / "resumed" / "vocabulary.json").exists()  # found before it was written


def test_a_damaged_last_checkpoint_falls_back_to_the_newest_readable_one(trained_run, tmp_path, caplog):
    folder = _copy_of(trained_run, tmp_path)
    whole = folder.last_checkpoint.read_bytes()
    folder.last_checkpoint.write_bytes(whole[: len(whole) // 2])  # as a full disk or a cut copy leaves it
    (best,) = [p for p in folder.checkpoints.glob("best-*.ckpt")]
    with caplog.at_level(logging.WARNING):
        assert resolve_checkpoint("last", folder, [], tmp_path).path == best
    assert f"{folder.last_checkpoint} is damaged" in caplog.text and str(best) in caplog.text
    best.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="holds no other readable checkpoint"):
        resolve_checkpoint("last", folder, [], tmp_path)
    with pytest.raises(CheckpointError, match="the checkpoint is damaged"):
        resolve_checkpoint(str(best), folder, [], tmp_path)


def test_a_resume_in_place_continues_the_csv_log_without_counting_twice(shared_data_root, tmp_path):
    run_dir = tmp_path / "run"
    run(compose_config("trainer.max_epochs=1", "trainer.log_every_n_steps=1", data_root=shared_data_root),
        run_dir)
    log = run_dir / "csv" / "metrics.csv"
    first = list(csv.DictReader(log.open()))
    run(compose_config("trainer.max_epochs=2", "trainer.log_every_n_steps=1", "ckpt_path=last",
                       data_root=shared_data_root), run_dir)
    rows = list(csv.DictReader(log.open()))
    before = [(r["step"], r["train/loss"]) for r in first if r.get("train/loss")]
    after = [(r["step"], r["train/loss"]) for r in rows if r.get("train/loss")]
    assert before and after[: len(before)] == before  # the first run's log is still there
    assert len(after) > len(before) and len({s for s, _ in after}) == len(after)  # each step once
    assert sorted(int(r["epoch"]) for r in rows if r.get("val/cider")) == [0, 1]
