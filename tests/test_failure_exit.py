"""A failed run ends: whatever fails (extraction with its writer process and loader workers alive,
a training step with loader workers, the outputs at the end), the command exits promptly with
its status, and nothing it started is left running."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest

from captioner.sources import load_records
from tests.conftest import ENV, compose_config, train_command

PROMPT_S = 10  # from the error's line to the process's end


def _processes_marked(marker: str) -> list[int]:
    """Processes whose environment carries `marker` (every child inherits it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return found


def _fails_and_ends(cwd: Path, data_root: Path, overrides: list[str], error: str) -> int:
    """Run train.py until `error` shows in its output; it must end within PROMPT_S after it, and
    leave no process behind. Returns its exit status."""
    marker = f"CAPTIONER_TEST_RUN={uuid.uuid4().hex}"
    name, value = marker.split("=")
    process = subprocess.Popen(train_command(data_root, *overrides), cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**ENV, name: value})
    seen, lines = None, []
    for line in process.stdout:  # read to the end: a full pipe would block the process
        lines.append(line)
        if seen is None and error in line:
            seen = time.monotonic()
    status = process.wait(timeout=300)
    ended = time.monotonic()
    output = "".join(lines)
    assert seen is not None, f"no {error!r} in the output:\n{output[-3000:]}"
    assert ended - seen <= PROMPT_S, f"the process lived {ended - seen:.1f} s after its error"
    deadline = time.monotonic() + 5  # a child may take a moment to see its parent gone
    while _processes_marked(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftover = _processes_marked(marker)
    assert not leftover, f"processes {leftover} outlived the run"
    return status


@pytest.mark.slow
def test_a_failure_during_extraction_ends_the_writer_and_the_workers(tmp_path):
    data_root = tmp_path / "data"
    cfg = compose_config(data_root=data_root)
    records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)  # the images, made now
    Path(records[40].path).write_bytes(b"not a jpeg")  # in the 3rd batch: the writer holds 2 already
    status = _fails_and_ends(tmp_path, data_root, ["dataset.strict=true", "cnn.num_workers=2"],
                             "cannot read image")
    assert status == 2  # a user error: the message names the file


@pytest.mark.slow
def test_a_failure_mid_epoch_ends_the_loader_workers(tmp_path, shared_data_root):
    # Adam's steps are about lr in size: at 1e30 the loss is no longer finite within a few steps
    status = _fails_and_ends(tmp_path, shared_data_root, ["model.lr=1e30", "data.num_workers=2",
                                                           "hydra.run.dir=run"], "NonFiniteLossError")
    assert status == 1


@pytest.mark.slow
def test_a_failure_writing_the_outputs_ends_the_run_as_failed(tmp_path, shared_data_root):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "plots").write_text("a file where the figures' folder goes")
    status = _fails_and_ends(tmp_path, shared_data_root, ["hydra.run.dir=run"], "plots")
    assert status == 1
    assert '"status": "failed"' in (tmp_path / "run" / "metrics.json").read_text()


@pytest.mark.parametrize("name", ["SIGTERM", "SIGUSR1"])
def test_a_signal_before_training_stops_the_run_at_once_as_preempted(tmp_path, shared_data_root, monkeypatch,
                                                                    name):
    # Before, the handlers came with training: a SIGTERM while features were extracted (or a GPU
    # awaited) killed the process and left metrics.json saying `running`; SIGINT ended as `failed`.
    import json
    import os
    import signal

    import captioner.runs.run as run_module
    from captioner.training.preemption import Preempted

    signum = signal.Signals[name]
    ignored = []  # the handler the process had: where the run does not take over, the signal is lost
    signalled = []
    previous = signal.signal(signum, lambda signum, frame: ignored.append(signum))
    try:
        def extracting(*args, **kwargs):
            signalled.append(time.monotonic())
            os.kill(os.getpid(), signum)
            time.sleep(5)
            raise AssertionError("the signal did not stop the run")

        monkeypatch.setattr(run_module, "prepare", extracting)
        with pytest.raises(Preempted) as stopped:
            run_module.run(compose_config(data_root=shared_data_root), tmp_path / "run")
    finally:
        signal.signal(signum, previous)
    assert time.monotonic() - signalled[0] < 5 and not ignored
    assert stopped.value.code == 128 + signum
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "preempted" and name in metrics["error"]


def _signal_in_a_forked_child(signum: int) -> int:
    """Fork; the child signals itself and reports how that ended it (7: KeyboardInterrupt, 9:
    SystemExit such as Preempted); returns its exit status (negative: killed by that signal)."""
    import os

    pid = os.fork()
    if pid == 0:
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)
        except KeyboardInterrupt:
            os._exit(7)
        except SystemExit:
            os._exit(9)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def test_stopping_at_once_is_the_runs_own_and_hands_sigusr1_back_for_a_fit():
    # SIGUSR1 held as a fit starts keeps Lightning from installing its SLURM requeue; a loader worker
    # forked before training (sanity validation, extraction) raised Preempted on Ctrl+C, and its
    # parent failed on "worker exited unexpectedly" instead of saving a checkpoint.
    import signal

    from captioner.training.preemption import PreemptionSignals

    usr1 = signal.getsignal(signal.SIGUSR1)
    signals = PreemptionSignals()
    signals.stop_at_once()
    try:
        assert signal.getsignal(signal.SIGUSR1) == signals._handle
        signals.release((signal.SIGUSR1,))  # MidEpochCheckpoint.setup, as a fit starts
        assert signal.getsignal(signal.SIGUSR1) is usr1
        assert _signal_in_a_forked_child(signal.SIGINT) == 7  # as PyTorch's workers expect
        assert _signal_in_a_forked_child(signal.SIGTERM) == -signal.SIGTERM
    finally:
        signals.restore()
