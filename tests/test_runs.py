"""Runs in the real world: preemption, kill -9 mid-epoch, exit codes, progress lines, run folders."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import (
    ENV,
    REPO,
    TINY,
    TINY_COMMAND,
    child_processes,
    command,
    python,
    saved_checkpoint,
    start_train,
    train,
    train_command,
    wait_for,
)

# 48 train scenes x 5 captions in batches of 8: 30 batches an epoch, a checkpoint after each one
SMALL_BATCHES = ["data.batch_size=8", "++trainer.deterministic=true"]


def batches_done(checkpoint: Path) -> tuple[int, int]:
    """(epoch, batches of it done) as the training order saved them in `checkpoint`."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    (order,) = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    return order["epoch"], order["batches_done"]


def mid_epoch_checkpoint(run_root: Path, process: subprocess.Popen) -> Path | None:
    for last in (run_root / "outputs").glob("**/checkpoints/last.ckpt"):
        try:
            epoch, done = batches_done(last)
        except Exception:  # being replaced right now
            return None
        if done > 3:
            return last
    assert process.poll() is None, process.stdout.read()[-3000:]
    return None


def uninterrupted_and_killed(tmp_path: Path, overrides: list[str], data_root: Path,
                             kill_at) -> tuple[Path, Path]:
    """The run uninterrupted (its metrics.json), and the same run killed (-9) once `kill_at(root,
    process)` finds its checkpoint (returned)."""
    whole = tmp_path / "whole"
    whole.mkdir()
    train(whole, *overrides, data_root=data_root)
    (reference,) = (whole / "outputs").glob("**/metrics.json")
    killed = tmp_path / "killed"
    killed.mkdir()
    process = start_train(killed, *overrides, data_root=data_root)
    try:
        last = wait_for(lambda: kill_at(killed, process))
    finally:  # also when no checkpoint came: a failing test leaves no training behind
        process.send_signal(signal.SIGKILL)
        process.wait()
    return reference, last


def assert_ends_as_if_never_killed(run_dir: Path, reference: Path, last: Path) -> None:
    """The resumed run in `run_dir` against the uninterrupted one's metrics.json `reference`."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = json.loads(reference.read_text())
    assert metrics["status"] == "completed" and metrics["resumed_from"] == str(last)
    assert metrics["test"] == expected["test"]
    assert [e["cider"] for e in metrics["history"]] == [e["cider"] for e in expected["history"]]
    weights = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    reference_weights = torch.load(reference.parent / "checkpoints" / "last.ckpt",
                                   weights_only=True)["state_dict"]
    assert weights.keys() == reference_weights.keys()
    for name, value in weights.items():
        assert torch.equal(value, reference_weights[name]), name


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_at_that_batch_and_ends_as_if_never_killed(tmp_path, shared_data_root):
    overrides = [*SMALL_BATCHES, "trainer.max_epochs=2", "checkpoint.every_minutes=0.00001"]
    reference, last = uninterrupted_and_killed(tmp_path, overrides, shared_data_root, mid_epoch_checkpoint)
    killed, run_dir = tmp_path / "killed", last.parent.parent
    epoch, done = batches_done(last)
    assert 0 < done < 30, (epoch, done)  # in the middle of an epoch
    # a killed run's checkpoint can be scored: its features are found without a finished run
    scored = python(killed, "-m", "captioner.evaluate", str(last), "--split", "val", check=False)
    assert scored.returncode == 0 and "None" not in scored.stderr, scored.stderr[-3000:]
    assert (run_dir / "evaluations").is_dir()

    train(killed, *overrides, f"hydra.run.dir={run_dir}", "ckpt_path=last", data_root=shared_data_root)
    assert_ends_as_if_never_killed(run_dir, reference, last)


def mid_scst_epoch_checkpoint(run_root: Path, process: subprocess.Popen) -> Path | None:
    """A last.ckpt written inside a self-critical epoch, once one is there (by Lightning's own
    count: the loader's saved position is what is under test)."""
    for last in (run_root / "outputs").glob("**/checkpoints/last.ckpt"):
        try:
            state = torch.load(last, map_location="cpu", weights_only=True)
            done = state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]
        except Exception:  # being replaced right now
            return None
        if state.get("training_stage") == "scst" and 3 < done < 12:
            return last
    assert process.poll() is None, process.stdout.read()[-3000:]
    return None


@pytest.mark.slow
def test_a_self_critical_run_killed_mid_epoch_ends_as_if_never_killed(tmp_path, shared_data_root):
    # 48 train images in batches of 4: 12 self-critical batches an epoch, a checkpoint after each
    overrides = [*SMALL_BATCHES, "trainer.max_epochs=1", "scst.enabled=true", "scst.epochs=2",
                 "scst.batch_size=4", "scst.samples=2", "checkpoint.every_minutes=0.00001"]
    reference, last = uninterrupted_and_killed(tmp_path, overrides, shared_data_root,
                                               mid_scst_epoch_checkpoint)
    run_dir = last.parent.parent
    train(tmp_path / "killed", *overrides, f"hydra.run.dir={run_dir}", "ckpt_path=last",
          data_root=shared_data_root)
    assert_ends_as_if_never_killed(run_dir, reference, last)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stages"] == {"xe": 1, "scst": 2}


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_within_seconds_and_exits_preempted(tmp_path, shared_data_root):
    overrides = [*SMALL_BATCHES, "trainer.max_epochs=50", "checkpoint.every_minutes=null"]
    process = start_train(tmp_path, *overrides, data_root=shared_data_root)
    # after the first epoch's checkpoint, so the signal lands in training
    first = wait_for(lambda: next((tmp_path / "outputs").glob("**/checkpoints/last.ckpt"), None))
    saved_before = wait_for(lambda: saved_checkpoint(first))
    process.send_signal(signal.SIGTERM)
    sent = time.time()
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert time.time() - sent < 20
    run_dir = first.parent.parent
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "preempted" and "SIGTERM" in metrics["error"]
    assert metrics["checkpoint"] == str(first) and saved_checkpoint(first) != saved_before
    epoch, done = batches_done(first)
    assert "saved" in output and "ckpt_path=last" in output

    # the same command pointed at that folder goes on from there
    train(tmp_path, *overrides[:-2], f"trainer.max_epochs={epoch + 1}", f"hydra.run.dir={run_dir}",
          "ckpt_path=last", data_root=shared_data_root)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["resumed_from"] == str(first)
    assert metrics["epochs"] == epoch + 1


@pytest.mark.slow
def test_a_signal_at_an_epochs_last_batch_stops_after_its_validation_and_skips_no_epoch(tmp_path,
                                                                                      shared_data_root):
    """One batch an epoch: the signal lands at an epoch's last batch or in its validation. A
    checkpoint written at that batch counted the epoch as done, and the resume skipped its validation
    (its place in the history, the best checkpoint, early stopping's and the plateau's step)."""
    overrides = [*SMALL_BATCHES, "trainer.max_epochs=50", "+trainer.limit_train_batches=1",
                 "checkpoint.every_minutes=null"]
    process = start_train(tmp_path, *overrides, data_root=shared_data_root)

    def first_checkpoint() -> Path | None:
        assert process.poll() is None, process.stdout.read()[-3000:]
        return next((tmp_path / "outputs").glob("**/checkpoints/last.ckpt"), None)

    first = wait_for(first_checkpoint)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    run_dir = first.parent.parent
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "preempted" and metrics["checkpoint"] == str(first)
    saved = torch.load(first, map_location="cpu", weights_only=True)
    epochs = [e["epoch"] for e in next(v for k, v in saved["callbacks"].items()
                                       if k.startswith("ValidationHistory"))["epochs"]]
    assert epochs == list(range(len(epochs))) and len(epochs) >= 1  # the last epoch saved was validated

    resumed = [o for o in overrides if not o.startswith("trainer.max_epochs")]
    train(tmp_path, *resumed, f"trainer.max_epochs={len(epochs) + 1}", f"hydra.run.dir={run_dir}",
          "ckpt_path=last", data_root=shared_data_root)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert [e["epoch"] for e in metrics["history"]] == list(range(len(epochs) + 1))


@pytest.mark.slow
def test_sigterm_to_rank_0_of_a_ddp_run_stops_both_ranks_within_seconds(tmp_path, shared_data_root):
    """The ranks agree on stopping about once a second, not every batch: the signal rank 0 got
    reaches rank 1 at the next agreement, both save (rank 0 writes) and stop."""
    tiny = [o for o in TINY_COMMAND if not o.startswith("trainer.devices")]
    arguments = train_command(shared_data_root, *SMALL_BATCHES, "trainer=ddp", "trainer.devices=2",
                              "trainer.max_epochs=50", "checkpoint.every_minutes=null", tiny=tiny)
    process = subprocess.Popen(arguments, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=ENV)
    try:
        first = wait_for(lambda: next((tmp_path / "outputs").glob("**/checkpoints/last.ckpt"), None))
        saved_before = wait_for(lambda: saved_checkpoint(first))
        rank_1 = wait_for(lambda: child_processes(process.pid))
        process.send_signal(signal.SIGTERM)  # rank 0 only, as `kill` would
        sent = time.time()
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert time.time() - sent < 20
    metrics = json.loads((first.parent.parent / "metrics.json").read_text())
    assert metrics["status"] == "preempted" and "SIGTERM" in metrics["error"]
    assert saved_checkpoint(first) != saved_before  # rank 0 saved again when told to
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in rank_1), timeout=10)

    # the same command pointed at that folder goes on from there, both ranks
    epoch = torch.load(first, map_location="cpu", weights_only=True)["epoch"]
    resumed = [o for o in arguments if not o.startswith("trainer.max_epochs")]
    command(tmp_path, [*resumed, f"trainer.max_epochs={epoch + 1}", f"hydra.run.dir={first.parent.parent}",
                       "ckpt_path=last"])
    metrics = json.loads((first.parent.parent / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["resumed_from"] == str(first)
    assert metrics["epochs"] == epoch + 1


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_folders(tmp_path, shared_data_root):
    # A fixed base folder stands for "the same second": both claim it at once.
    shared = "hydra.run.dir=${unique_dir:outputs/same-second}"
    processes = [start_train(tmp_path, f"rnn={rnn}", "trainer.max_epochs=1", shared,
                             data_root=shared_data_root) for rnn in ("gru", "lstm")]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    folders = sorted((tmp_path / "outputs").glob("same-second*"))
    assert [f.name for f in folders] == ["same-second", "same-second-1"]
    cells = {json.loads((f / "metrics.json").read_text())["config"]["rnn"] for f in folders}
    assert cells == {"gru", "lstm"}
    for folder in folders:
        checkpoints = sorted(p.name for p in (folder / "checkpoints").iterdir())
        assert checkpoints == ["best-epoch00.ckpt", "last.ckpt"]
    # a log without a terminal shows each epoch on one line, and none of the known library noise
    for output in outputs:
        assert "epoch 1/1  train loss " in output and "val BLEU-4 " in output and "ETA" in output
        assert "  lr 0.001  " in output  # model.lr, the epoch's learning rate
        assert "litlogger" not in output and "LeafSpec" not in output
    for folder in folders:
        assert "epoch 1/1  train loss " in (folder / "train.log").read_text()
    default_run_dir = (REPO / "conf" / "train.yaml").read_text()
    assert "dir: ${unique_dir:outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}}" in default_run_dir


@pytest.mark.parametrize("overrides, message", [
    (["decode.strategy=bem"], "decode.strategy='bem': expected greedy or beam"),
    # the same path through train.py as the first: each starts a process (~7 s), so slow
    pytest.param(["decode.beam_size=0"], "decode.beam_size=0: expected an integer >= 1",
                 marks=pytest.mark.slow),
    pytest.param(["rnn.cell=lsmt"], "rnn.cell='lsmt': expected gru or lstm", marks=pytest.mark.slow),
    pytest.param(["dataset=flickr8k", "dataset.root=/no/such/folder", "cnn.weights=null"], "/no/such/folder",
                 marks=pytest.mark.slow),
    (["rnn=nosuch"], "Could not find 'rnn/nosuch'"),
    # the datasets' own options (a traceback and exit 1 before; the shapes generator left its
    # half-written folder behind)
    (["dataset.captions_per_image=8"], "dataset.captions_per_image=8: the generator has 7 caption templates"),
    # refused while generating: the staging folder is removed
    pytest.param(["dataset.split_fractions={train: 0.5, val: 0.1, test: 0.1}"],
                 "dataset.split_fractions must give train/val/test summing to 1", marks=pytest.mark.slow),
    pytest.param(["dataset=flickr8k", "dataset.layout=offical", "dataset.root=.", "cnn.weights=null"],
                 "dataset.layout='offical': expected auto, official, csv or karpathy",
                 marks=pytest.mark.slow),
])
def test_user_errors_are_one_line_and_exit_2_before_any_work(tmp_path, overrides, message):
    tiny = [o for o in TINY if not o.startswith("dataset.")] if overrides[0].startswith("dataset=") else TINY
    result = command(tmp_path, train_command(tmp_path / "data", *overrides, tiny=tiny), check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    if not overrides[0].startswith("rnn=nosuch"):
        assert result.stderr.strip().count("\n") == 0, result.stderr  # one line
    assert not (tmp_path / "data" / "features").exists()  # nothing was extracted
    assert not list((tmp_path / "data").glob(".*.partial-*"))  # no half-generated dataset left


@pytest.mark.slow
def test_tracebacks_of_user_errors_are_kept_for_hydra_full_error(tmp_path):
    result = train(tmp_path, "decode.strategy=bem", data_root=tmp_path / "data", check=False,
                   env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 2 and "Traceback" in result.stderr
    assert "decode.strategy='bem'" in result.stderr


@pytest.mark.slow
def test_a_failed_run_exits_1_and_other_commands_exit_2_on_bad_input(tmp_path, shared_data_root):
    result = train(tmp_path, "dataset.split_fractions={train: 1.0, val: 0.0, test: 0.0}",
                   data_root=shared_data_root, check=False)
    assert result.returncode == 1 and "split 'val' has no images" in result.stderr
    missing = tmp_path / "no.ckpt"
    for args in (["-m", "captioner.evaluate", str(missing)],
                 ["-m", "captioner.report", str(tmp_path / "none")],
                 ["-m", "captioner.prepare", *(o for o in TINY if not o.startswith("dataset.")),
                  "dataset=iapr", "dataset.root=/no/such/iapr", "cnn.weights=null",
                  f"data_root={tmp_path / 'data'}"]):
        result = python(tmp_path, *args, check=False)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr


def test_help_lists_the_launcher_group(tmp_path):
    result = python(tmp_path, str(REPO / "train.py"), "--help")
    assert result.returncode == 0
    assert "hydra/launcher: " in result.stdout
    (launchers,) = [line.split(":", 1)[1] for line in result.stdout.splitlines()
                    if line.startswith("hydra/launcher:")]
    assert {"local_gpus", "parallel", "slurm"} <= {c.strip() for c in launchers.split(",")}
    assert "rnn: gru, lstm" in result.stdout


@pytest.mark.slow
def test_a_resume_in_place_with_a_changed_model_leaves_the_finished_run_untouched(tmp_path, shared_data_root):
    run_dir = tmp_path / "run"
    train(tmp_path, f"hydra.run.dir={run_dir}", data_root=shared_data_root)

    def files() -> dict[Path, bytes]:
        return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}

    before = files()
    result = train(tmp_path, f"hydra.run.dir={run_dir}", "ckpt_path=last", "rnn=lstm", "model.hidden_dim=48",
                   data_root=shared_data_root, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().count("\n") == 0 and "cannot change when resuming" in result.stderr
    assert "rnn.cell=lstm (the checkpoint has gru)" in result.stderr
    assert files() == before  # metrics.json, the CSV log, .hydra/ and the checkpoints as they were
