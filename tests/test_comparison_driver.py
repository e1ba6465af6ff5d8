"""The committed comparison's driver (benchmarks/flickr8k_comparison.py) when things go wrong: an
interrupt gives the run in progress time to save, keeping is never cut off half-way, a stale report
is rewritten, failures show in the exit status, and bad files are named."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from tests.conftest import saved_checkpoint, wait_for
from tests.test_committed_reports import _driver, run_folder, tiny_training_sweep

SAVES_ON_SIGTERM = """
import signal, sys, time
def save(signum, frame):
    time.sleep(0.5)  # a batch to finish and a checkpoint to write: longer than subprocess's 0.25 s
    open(sys.argv[1], "w").write("saved")
    sys.exit(143)
signal.signal(signal.SIGTERM, save)
print("ready", flush=True)
time.sleep(60)
"""


def _child(tmp_path: Path, script: str) -> tuple[subprocess.Popen, Path]:
    saved = tmp_path / "checkpoint"
    process = subprocess.Popen([sys.executable, "-c", script, str(saved)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    return process, saved


def test_an_interrupted_driver_lets_its_run_save_before_it_goes_on(tmp_path):
    driver = _driver()
    process, saved = _child(tmp_path, SAVES_ON_SIGTERM)
    driver.stop_run(process, grace_s=30)
    assert process.returncode == 143 and saved.read_text() == "saved"


def test_a_run_that_does_not_stop_in_its_grace_time_is_killed(tmp_path, capsys):
    driver = _driver()
    ignores = SAVES_ON_SIGTERM.replace("signal.signal(signal.SIGTERM, save)",
                                       "signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    process, saved = _child(tmp_path, ignores)
    began = time.monotonic()
    driver.stop_run(process, grace_s=1)
    assert process.returncode == -signal.SIGKILL and time.monotonic() - began < 10
    assert not saved.exists() and "killed before it saved" in capsys.readouterr().out


def test_signals_wait_until_the_runs_are_kept():
    driver = _driver()
    previous = signal.signal(signal.SIGTERM, driver._interrupt)  # as main() installs it
    # Python's default handler, or SIG_IGN where the suite was started in the background by a shell
    interrupt = signal.getsignal(signal.SIGINT)
    try:
        with driver.deferred_signals() as received:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # nothing raised in here
        assert received == [signal.SIGTERM, signal.SIGINT]
        assert signal.getsignal(signal.SIGTERM) is driver._interrupt
        assert signal.getsignal(signal.SIGINT) is interrupt
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_kept_overrides_leave_out_the_resume_and_the_machines_locations(tmp_path):
    driver = _driver()
    sweep = driver.KeptSweep(kept=tmp_path / "runs")
    cell = sweep.cells()[0]
    given = [*sweep.overrides(cell), "data_root=/mnt/a", "dataset.root=/mnt/b/flickr8k",
             "trainer.max_epochs=3", "ckpt_path=last"]
    kept = sweep.keep(run_folder(tmp_path / "run", overrides=given), cell)
    assert yaml.safe_load((kept / ".hydra" / "overrides.yaml").read_text()) == [
        *sweep.overrides(cell), "trainer.max_epochs=3"]  # a setting stays: it changes what trained


def test_a_keep_cut_off_by_a_kill_is_undone_the_next_time(tmp_path):
    driver = _driver()
    sweep = driver.KeptSweep(kept=tmp_path / "runs")
    staged = run_folder(sweep.kept / "00-mobilenet_v2-gru-seed0.partial")  # killed while copying
    replaced = run_folder(sweep.kept / "01-mobilenet_v2-lstm-seed0.old")  # killed between the two renames
    both = run_folder(sweep.kept / "02-efficientnet_lite2-gru-seed0.old")  # killed before the old one went
    run_folder(sweep.kept / "02-efficientnet_lite2-gru-seed0")
    sweep.tidy()
    assert sorted(p.name for p in sweep.kept.iterdir()) == ["01-mobilenet_v2-lstm-seed0",
                                                           "02-efficientnet_lite2-gru-seed0"]
    assert not staged.exists() and not replaced.exists() and not both.exists()
    assert sweep.is_kept(sweep.cells()[1]) and sweep.is_kept(sweep.cells()[2])


def test_a_report_older_than_a_kept_run_is_stale(tmp_path):
    driver = _driver()
    sweep = driver.KeptSweep(kept=tmp_path / "report" / "runs")
    sweep.report_dir = tmp_path / "report"
    assert not sweep.report_is_stale()  # nothing kept, nothing to report
    run = run_folder(sweep.kept / "00-mobilenet_v2-gru-seed0")
    assert sweep.report_is_stale()  # kept, never reported
    report = sweep.report_dir / "report.md"
    report.write_text("# report\n")
    assert not sweep.report_is_stale()
    later = report.stat().st_mtime + 5
    os.utime(run / "metrics.json", (later, later))  # kept after the report was written (or it failed)
    assert sweep.report_is_stale()


def test_retraining_dirty_runs_does_not_keep_a_run_the_checkout_changed_under(tmp_path, capsys):
    driver = _driver()
    sweep = driver.KeptSweep(kept=tmp_path / "runs")
    sweep.outputs = tmp_path / "outputs"
    first, second = sweep.cells()[:2]

    def train(cell: dict, resume: Path | None = None) -> Path:
        folder = sweep.outputs / f"2026-12-07_00-00-00_{driver.cell_name(cell)}" / "0"
        return run_folder(folder, dirty=cell is first)

    sweep.train = train
    kept, interrupted, not_completed = driver.train_then_keep(sweep, [first, second], clean_only=True)
    assert kept == [sweep.kept / sweep.kept_name(second)] and not_completed == [first] and not interrupted
    assert "not kept: the checkout changed while it trained" in capsys.readouterr().out


def test_a_run_still_training_in_its_own_process_is_not_started_twice(tmp_path, capsys):
    driver = _driver()
    sweep = driver.KeptSweep(kept=tmp_path / "runs")
    sweep.outputs = tmp_path / "outputs"
    cell = sweep.cells()[0]
    folder = sweep.outputs / f"2026-12-07_00-00-00_{driver.cell_name(cell)}" / "0"
    run_folder(folder, status="running", pid=os.getpid(), host=socket.gethostname())
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_text("weights")
    sweep.train = lambda cell, resume=None: pytest.fail("trained a run another process is training")
    assert driver.train_then_keep(sweep, [cell]) == ([], False, [cell])
    assert f"still training in process {os.getpid()}" in capsys.readouterr().out
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    run_folder(folder.parent.parent / f"2026-12-07_00-00-01_{driver.cell_name(cell)}" / "0", status="running",
         pid=int(ended.stdout), host=socket.gethostname())
    assert driver._running_here(sweep.newest_run(cell)) is None  # its process is gone: resumable


def _tiny_sweep(tmp_path: Path, monkeypatch, driver, seeds: str = "0,1") -> Path:
    sweep_file = tmp_path / "tiny_cells.yaml"
    sweep_file.write_text(f"hydra:\n  sweeper:\n    params:\n      seed: {seeds}\n")
    monkeypatch.setattr(driver, "uncommitted_changes", lambda: [])
    monkeypatch.setattr(driver, "REPO", tmp_path)  # outputs/, docs/ and the lock under tmp_path
    monkeypatch.setattr(driver.KeptSweep, "write_report", lambda self: True)
    return sweep_file


def test_the_driver_exits_1_when_a_run_did_not_complete(tmp_path, monkeypatch):
    driver = _driver()
    sweep_file = _tiny_sweep(tmp_path, monkeypatch, driver)

    def train(self, cell: dict, resume: Path | None = None) -> Path:
        status = "failed" if cell["seed"] == "1" else "completed"
        return run_folder(self.outputs / f"2026-12-07_00-00-00_{driver.cell_name(cell)}" / "0", status=status)

    monkeypatch.setattr(driver.KeptSweep, "train", train)
    with pytest.raises(SystemExit) as stopped:
        driver.main(["--sweep", str(sweep_file)])
    assert stopped.value.code == 1
    assert [p.name for p in (tmp_path / "docs" / "tiny_cells" / "runs").iterdir()] == ["00-seed0"]


def test_one_driver_at_a_time_per_sweep(tmp_path, monkeypatch, capsys):
    driver = _driver()
    sweep_file = _tiny_sweep(tmp_path, monkeypatch, driver)
    monkeypatch.setattr(driver.KeptSweep, "train", lambda *_: pytest.fail("trained beside another driver"))
    lock = tmp_path / "outputs" / "tiny_cells" / ".driver.lock"
    lock.parent.mkdir(parents=True)
    with FileLock(str(lock)), pytest.raises(SystemExit) as stopped:
        driver.main(["--sweep", str(sweep_file)])
    assert stopped.value.code == 2
    assert f"another driver is running tiny_cells.yaml ({lock}" in capsys.readouterr().err


def test_bad_files_and_options_are_named(tmp_path, monkeypatch, capsys):
    driver = _driver()
    sweep_file = _tiny_sweep(tmp_path, monkeypatch, driver, seeds="0,1,2")
    cells = driver.KeptSweep(sweep_file).cells()
    assert driver.swept_values(["seed=0", "seed=2"], cells) == {"seed": {"0", "2"}}  # either value
    driver.main(["--sweep", str(sweep_file), "--dry-run", "--only", "seed=0", "--only", "seed=2"])
    assert capsys.readouterr().out.startswith("2 of 2 runs missing: seed0, seed2")

    damaged = tmp_path / "docs" / "tiny_cells" / "runs" / "00-seed0" / "metrics.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text('<<<<<<< HEAD\n{"status": "completed"}\n')
    with pytest.raises(SystemExit) as stopped:
        driver.main(["--sweep", str(sweep_file), "--dry-run"])
    assert stopped.value.code == 2 and f"{damaged}: not valid JSON" in capsys.readouterr().err

    no_seeds = tmp_path / "no_seeds.yaml"
    no_seeds.write_text("hydra:\n  sweeper:\n    params:\n      rnn: gru,lstm\n")
    with pytest.raises(SystemExit) as stopped:
        driver.main(["--sweep", str(no_seeds), "--dry-run"])
    assert stopped.value.code == 2 and f"{no_seeds.resolve()}: the driver runs a sweep over seeds" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        driver.main(["--sweep", str(sweep_file), "--max-runs", "-1"])
    assert stopped.value.code == 2 and "--max-runs -1: expected 0 or more" in capsys.readouterr().err


@pytest.mark.slow
def test_a_sigterm_to_the_driver_alone_reaches_its_run_which_saves_and_stops(tmp_path, monkeypatch):
    """As a session's end stops the driver: train.py is not in the signal's way, yet it must be
    told, and given the time to save, or the next session loses up to an epoch (before: SIGKILL
    after 0.25 s)."""
    import threading

    driver = _driver()
    sweep = tiny_training_sweep(tmp_path, monkeypatch, "trainer.max_epochs=200")
    (cell,) = sweep.cells()

    signalled = []

    def signal_the_driver_once_training() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(sweep.outputs.glob("*/0/checkpoints/last.ckpt")):
            time.sleep(0.1)
        time.sleep(0.5)  # past the checkpoint's rename, into the next epoch
        (last,) = sweep.outputs.glob("*/0/checkpoints/last.ckpt")
        signalled.append(wait_for(lambda: saved_checkpoint(last), timeout=60))
        os.kill(os.getpid(), signal.SIGTERM)  # to the driver only, not to its child

    previous = signal.signal(signal.SIGTERM, driver._interrupt)  # as main() installs it
    threading.Thread(target=signal_the_driver_once_training, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            sweep.train(cell)
    finally:
        signal.signal(signal.SIGTERM, previous)
    (run,) = sweep.outputs.glob("*/0")
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "preempted", summary.get("error")
    assert saved_checkpoint(run / "checkpoints" / "last.ckpt") != signalled[0]  # saved when told to
    assert driver._resumable(run)


@pytest.mark.slow
def test_a_resume_train_py_refuses_is_marked_never_retried_and_the_cell_trains_afresh(
        tmp_path, monkeypatch, capsys):
    """A cut-off run whose checkpoint cannot be resumed used to be retried (and refused, exit 2) by
    every later driver run, and its cell never trained."""
    driver = _driver()
    sweep = tiny_training_sweep(tmp_path, monkeypatch, "trainer.max_epochs=1")
    (cell,) = sweep.cells()
    cut_off = run_folder(sweep.outputs / f"2026-12-01_00-00-00_{driver.cell_name(cell)}" / "0",
                         status="preempted")
    (cut_off / ".hydra" / "config.yaml").write_text(yaml.safe_dump(sweep.composed_config(cell)))
    (cut_off / "checkpoints").mkdir()
    (cut_off / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")  # damaged, nothing else
    assert driver._resumable(cut_off)
    kept, interrupted, not_completed = driver.train_then_keep(sweep, [cell])
    assert len(kept) == 1 and not interrupted and not not_completed
    assert f"{cut_off} cannot be resumed (see above): training afresh" in capsys.readouterr().out
    assert (cut_off / driver.RESUME_REFUSED).is_file() and not driver._resumable(cut_off)
    assert json.loads((cut_off / "metrics.json").read_text())["status"] == "preempted"  # left as it was
    (fresh,) = [run for run in sweep.outputs.glob("*/0") if run != cut_off]
    assert json.loads((fresh / "metrics.json").read_text())["status"] == "completed"


def test_a_run_in_the_drivers_folder_that_trained_other_settings_is_neither_kept_nor_resumed(
        tmp_path, capsys):
    driver = _driver()
    sweep = driver.KeptSweep(kept=tmp_path / "runs")
    sweep.outputs = tmp_path / "outputs"
    first, second = sweep.cells()[:2]
    composed = sweep.composed_config(first)
    trial = run_folder(sweep.outputs / f"2026-12-01_00-00-00_{driver.cell_name(first)}" / "0")
    (trial / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {**composed, "trainer": {**composed["trainer"], "max_epochs": 1}}))
    same = run_folder(sweep.outputs / f"2026-12-01_00-00-00_{driver.cell_name(second)}" / "0")
    (same / ".hydra" / "config.yaml").write_text(yaml.safe_dump(sweep.composed_config(second)))
    trained = []

    def train(cell: dict, resume: Path | None = None) -> Path:
        trained.append((cell, resume))
        return run_folder(sweep.outputs / f"2026-12-07_00-00-00_{driver.cell_name(cell)}" / "0")

    sweep.train = train
    kept, _, _ = driver.train_then_keep(sweep, [first, second])
    assert trained == [(first, None)]  # the trial is not resumed either; the matching run is kept as is
    assert "trained other settings (trainer.max_epochs)" in capsys.readouterr().out
    assert len(kept) == 2
