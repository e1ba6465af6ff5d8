"""The sweep report on run folders laid out as Hydra leaves them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from captioner.compare.report import collect_runs, main, main_effects, swept_factors, write_report


def make_run(sweep: Path, job: int, overrides: list[str], metrics: dict | None) -> None:
    folder = sweep / str(job)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))


def completed(cider: float, bleu4: float) -> dict:
    return {"status": "completed", "test": {"bleu4": bleu4, "cider": cider}, "epochs": 2,
            "train_time_s": 10.0, "history": [{"epoch": 0, "cider": cider / 2}, {"epoch": 1, "cider": cider}]}


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    make_run(tmp_path, 0, ["data_root=/d", "cnn=vgg16", "rnn=gru"], completed(1.0, 0.2))
    make_run(tmp_path, 1, ["data_root=/d", "cnn=vgg16", "rnn=lstm"], completed(2.0, 0.4))
    make_run(tmp_path, 2, ["data_root=/d", "cnn=resnet101", "rnn=gru"], completed(3.0, 0.3))
    make_run(tmp_path, 3, ["data_root=/d", "cnn=resnet101", "rnn=lstm"],
             {"status": "failed", "error": "RuntimeError: CUDA out of memory"})
    make_run(tmp_path, 10, ["data_root=/d", "cnn=resnet101", "rnn=gru"], None)  # killed: no metrics
    return tmp_path


def test_runs_are_read_in_job_order_with_their_status(sweep):
    runs = collect_runs(sweep)
    assert [r.path.name for r in runs] == ["0", "1", "2", "3", "10"]
    assert [r.status for r in runs] == ["completed"] * 3 + ["failed", "missing"]
    assert swept_factors(runs) == ["cnn", "rnn"]


def test_main_effects_average_the_completed_runs_of_each_level(sweep):
    runs = collect_runs(sweep)
    by_cnn = main_effects(runs, "cnn")
    assert by_cnn["vgg16"]["cider"] == pytest.approx(1.5) and by_cnn["vgg16"]["runs"] == 2
    assert by_cnn["resnet101"]["cider"] == pytest.approx(3.0) and by_cnn["resnet101"]["runs"] == 1
    assert main_effects(runs, "rnn")["lstm"]["bleu4"] == pytest.approx(0.4)


def test_the_report_marks_failures_and_draws_the_charts(sweep):
    report = write_report(sweep, collect_runs(sweep)).read_text()
    assert "| 3 | cnn=resnet101 rnn=lstm | failed: RuntimeError: CUDA out of memory |" in report
    assert "| 10 | cnn=resnet101 rnn=gru | missing |" in report
    assert "Shared overrides: data_root=/d" in report
    assert "| vgg16 | 2 | - | - | - | 0.300 | - | - | 1.500 |" in report
    for chart in ("effects_cnn.png", "effects_rnn.png", "val_cider.png"):
        assert (sweep / chart).stat().st_size > 1000


def test_a_folder_without_runs_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no runs found" in capsys.readouterr().err


def test_runs_in_progress_preempted_and_killed_are_told_apart(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    host = socket.gethostname()
    make_run(tmp_path, 0, ["rnn=gru"], {"status": "running", "pid": os.getpid(), "host": host})
    make_run(tmp_path, 1, ["rnn=lstm"], {"status": "running", "pid": int(gone.stdout), "host": host})
    make_run(tmp_path, 2, ["rnn=gru"], {"status": "preempted", "error": "preempted by SIGTERM"})
    runs = collect_runs(tmp_path)
    assert [r.status for r in runs] == ["running", "killed", "preempted"]
    report = write_report(tmp_path, runs).read_text()
    assert "| 0 | rnn=gru | running |" in report
    assert "| 2 | rnn=gru | preempted: preempted by SIGTERM |" in report
