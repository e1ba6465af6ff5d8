"""The committed sweep reports (docs/*/report.md) say what their own intervals and rule say, and the
committed Flickr8k comparison is made the way its driver says."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest
import yaml

from captioner.compare.decision_rule import load_rule
from tests.conftest import ENV, TINY_COMMAND

REPO = Path(__file__).resolve().parent.parent
REPORTS = sorted(REPO.glob("docs/*/report.md"))
_INTERVAL = re.compile(r"([+-]\d+\.\d+) \[([+-]\d+\.\d+), ([+-]\d+\.\d+)\]")


def verdict_rows(report: str) -> list[list[str]]:
    """The cells of every table row that carries a verdict and its Holm p-value."""
    rows = []
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and len(cells) >= 6 and re.fullmatch(r"\*\*[a-z ()0-9]+\*\*", cells[3]):
            rows.append(cells)
    return rows


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.parent.name)
def test_every_verdict_follows_its_interval_and_the_rule(path):
    rule = load_rule()
    rows = verdict_rows(path.read_text())
    assert rows, f"{path}: no verdicts found"
    for cells in rows:
        estimate, low, high = map(float, _INTERVAL.fullmatch(cells[2]).groups())
        word, adjusted, seeds = cells[3].strip("*"), cells[4], int(cells[-1])
        assert low <= estimate <= high, cells
        if seeds < rule.seeds_required:
            assert word == f"inconclusive ({seeds} seed{'s' if seeds != 1 else ''})", cells
            continue
        decided = float(adjusted) < rule.alpha
        if word == "better":
            assert decided and low > 0, cells
        elif word == "worse":
            assert decided and high < 0, cells
        elif word == "equivalent":  # TOST: the 90% interval (inside the 95% one) within the margin
            assert decided and not (low > 0 or high < 0), cells
        else:  # neither test passed, or Holm's correction took the verdict back
            assert word == "inconclusive" and not decided, cells


def _driver():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import flickr8k_comparison

    return flickr8k_comparison


def run_folder(folder: Path, status: str = "completed", dirty: bool = False,
               overrides: list[str] | None = None, config: dict | None = None, **summary) -> Path:
    """A run's folder as the driver reads it: metrics.json (`status`, `git_dirty`, `summary`),
    captions.json, .hydra/overrides.yaml and config.yaml."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"status": status, "provenance": {"git_dirty": dirty},
                                                     **summary}))
    (folder / "captions.json").write_text("[]")
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or ["seed=0"]))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config or {}))
    return folder


def tiny_training_sweep(tmp_path: Path, monkeypatch, *overrides: str):
    """A one-cell sweep (seed 0) of the tiny config whose runs really train, kept under tmp_path."""
    driver = _driver()
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    sweep_file = tmp_path / "sweeps" / "tiny_cells.yaml"
    sweep_file.parent.mkdir()
    sweep_file.write_text("defaults:\n  - train\n  - _self_\n\nsweep_name: tiny_cells\n\n"
                          "hydra:\n  sweeper:\n    params:\n      seed: 0\n")
    sweep = driver.KeptSweep(sweep_file, kept=tmp_path / "kept",
                             extra_overrides=[*TINY_COMMAND, *overrides, f"data_root={tmp_path / 'data'}"])
    sweep.outputs = tmp_path / "outputs"
    return sweep


def test_the_comparison_driver_runs_every_cell_seed_by_seed():
    driver = _driver()
    cells = driver.KeptSweep().cells()
    assert len(cells) == 12 and [c["seed"] for c in cells] == ["0"] * 4 + ["1"] * 4 + ["2"] * 4
    assert driver.cell_name(cells[0]) == "mobilenet_v2-gru-seed0"
    assert {driver.cell_name(c) for c in cells} == {f"{cnn}-{rnn}-seed{s}" for cnn in
                                                     ("mobilenet_v2", "efficientnet_lite2")
                                                     for rnn in ("gru", "lstm") for s in "012"}


def test_the_driver_keeps_a_runs_small_results_and_only_completed_runs_count(tmp_path):
    driver = _driver()
    sweep = driver.KeptSweep(kept=tmp_path / "runs")
    run = tmp_path / "outputs" / "0"
    (run / ".hydra").mkdir(parents=True)
    for name in driver.KEPT_FILES:
        (run / name).write_text(json.dumps({"status": "completed"}) if name == "metrics.json" else "[]")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_text("weights")
    cell = {"cnn": "mobilenet_v2", "rnn": "gru", "seed": "0"}
    assert not sweep.is_kept(cell)
    kept = sweep.keep(run, cell)
    assert kept == tmp_path / "runs" / "00-mobilenet_v2-gru-seed0" and sweep.is_kept(cell)
    kept_files = sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file())
    assert kept_files == sorted(driver.KEPT_FILES)  # no checkpoint
    (run / "code.diff").write_text("diff --git a/x b/x\n")  # a run from a tree with uncommitted changes
    assert (sweep.keep(run, cell) / "code.diff").read_text() == "diff --git a/x b/x\n"
    (kept / "metrics.json").write_text(json.dumps({"status": "failed"}))
    assert not sweep.is_kept(cell)


def test_the_trainable_top_sweep_adopts_only_runs_that_trained_its_own_config(tmp_path):
    """Its N=0 cells are the CNN/RNN comparison's EfficientNet-Lite2 + GRU runs (same config but for
    the sweep's name); an N=1 cell, another seed or another CNN has no such run."""
    driver = _driver()
    top = driver.KeptSweep(REPO / "sweeps" / "flickr8k_trainable_top.yaml", kept=tmp_path / "runs")
    names = [driver.cell_name(c) for c in top.cells()[:2]]
    assert names == ["trainable_blocks0-seed0", "trainable_blocks1-seed0"]
    comparison = driver.KeptSweep()
    other = tmp_path / "other"
    for cell in comparison.cells()[:4]:  # seed 0 of every CNN x RNN, each with the config it would save
        run = other / comparison.kept_name(cell)
        (run / ".hydra").mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"status": "completed"}))
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(comparison.composed_config(cell)))
    frozen, trained, frozen_seed1 = top.cells()[0], top.cells()[1], top.cells()[2]
    assert top.adoptable(frozen, other).name == "02-efficientnet_lite2-gru-seed0"
    assert top.adoptable(trained, other) is None and top.adoptable(frozen_seed1, other) is None
    source = other / "02-efficientnet_lite2-gru-seed0"
    (source / "captions.json").write_text("[]")
    (source / ".hydra" / "overrides.yaml").write_text("- cnn=efficientnet_lite2\n")
    kept = top.keep(source, frozen, top.overrides(frozen))
    overrides = yaml.safe_load((kept / ".hydra" / "overrides.yaml").read_text())
    assert overrides == ["cnn.trainable_blocks=0", "seed=0"]
    assert top.is_kept(frozen) and (kept / "adopted_from.txt").is_file()
    newer, older = {"a": {"b": 1}, "sweep_name": "x", "added": 1}, {"a": {"b": 2}, "sweep_name": "y"}
    assert driver.config_differences(newer, older) == ["a.b"]


def test_retrain_dirty_replaces_a_run_from_uncommitted_code_only_with_a_clean_one(tmp_path):
    """`--retrain-dirty`: a kept run whose metrics.json says git_dirty counts as missing (and stays
    kept until its retrain completes); a dirty run under outputs/ is neither kept nor resumed, and
    a dirty source is not adopted."""
    driver = _driver()
    sweep = driver.KeptSweep(kept=tmp_path / "runs")
    sweep.outputs = tmp_path / "outputs"
    first, second = sweep.cells()[:2]

    run_folder(sweep.kept / sweep.kept_name(first), dirty=True)
    run_folder(sweep.kept / sweep.kept_name(second), dirty=False)
    assert first not in sweep.missing() and second not in sweep.missing()
    assert first in sweep.missing(retrain_dirty=True) and second not in sweep.missing(retrain_dirty=True)
    assert sweep.is_kept(first)  # the dirty run stays until a clean one replaces it
    assert driver.swept_values(["rnn=lstm"], sweep.cells()) == {"rnn": {"lstm"}}
    assert first not in sweep.missing(retrain_dirty=True, only={"rnn": {"lstm"}})
    assert first in sweep.missing(retrain_dirty=True, only={"rnn": {"gru"}, "seed": {"0"}})
    for wrong in ("rnn=rnn_tanh", "lr=0.1", "cnn"):
        with pytest.raises(ValueError, match="cnn=efficientnet_lite2,mobilenet_v2; rnn=gru,lstm; seed=0,1,2"):
            driver.swept_values([wrong], sweep.cells())

    old = run_folder(sweep.outputs / f"2026-12-01_00-00-00_{driver.cell_name(first)}" / "0", dirty=True)
    assert sweep.newest_run(first) == old and sweep.newest_run(first, clean_only=True) is None
    new = run_folder(sweep.outputs / f"2026-12-07_00-00-00_{driver.cell_name(first)}" / "0", dirty=False)
    assert sweep.newest_run(first, clean_only=True) == new
    sweep.keep(new, first)
    assert first not in sweep.missing(retrain_dirty=True)

    other = tmp_path / "other"
    config = sweep.composed_config(first)
    dirty_source = run_folder(other / "a-dirty", dirty=True, config=config)
    assert sweep.adoptable(first, other) == dirty_source
    assert sweep.adoptable(first, other, clean_only=True) is None
    clean_source = run_folder(other / "b-clean", dirty=False, config=config)
    assert sweep.adoptable(first, other, clean_only=True) == clean_source



def test_runs_are_kept_only_after_the_training_so_each_starts_from_the_same_tree(tmp_path):
    """A kept folder in docs/ changes the checkout: kept between runs, it made every later run of
    one driver invocation record a dirty tree. The driver keeps after its last run, or when it is
    interrupted (here by a real SIGTERM: the completed runs then, not the failed one)."""
    driver = _driver()
    sweep = driver.KeptSweep(kept=tmp_path / "runs")
    sweep.outputs = tmp_path / "outputs"
    trained = []

    def train(cell: dict, resume: Path | None = None) -> Path:
        assert not sweep.kept.exists(), "a run started after another run was kept"
        if len(trained) == 3:  # a session's end stops the driver during the fourth run
            os.kill(os.getpid(), signal.SIGTERM)
        run = sweep.outputs / f"2026-12-07_00-00-0{len(trained)}_{driver.cell_name(cell)}" / "0"
        (run / ".hydra").mkdir(parents=True)
        status = "failed" if len(trained) == 1 else "completed"
        (run / "metrics.json").write_text(json.dumps({"status": status, "provenance": {"git_dirty": False}}))
        for name in ("captions.json", ".hydra/overrides.yaml", ".hydra/config.yaml"):
            (run / name).write_text("[]")
        trained.append(cell)
        return run

    sweep.train = train
    cells = sweep.cells()
    previous = signal.signal(signal.SIGTERM, driver._interrupt)  # as main() installs it
    try:
        kept, interrupted, not_completed = driver.train_then_keep(sweep, cells)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert interrupted and len(trained) == 3 and not_completed == [cells[1]]
    assert kept == [sweep.kept / sweep.kept_name(cells[0]), sweep.kept / sweep.kept_name(cells[2])]
    assert [cell for cell in cells if sweep.is_kept(cell)] == [cells[0], cells[2]]
    # the next invocation keeps a run that completed after its driver stopped, without training it
    shutil.rmtree(sweep.kept)
    sweep.train = lambda cell, resume=None: pytest.fail("a completed run trained again")
    assert driver.train_then_keep(sweep, [cells[0], cells[2]]) == (kept, False, [])


def test_retraining_dirty_runs_refuses_to_start_from_a_dirty_checkout(tmp_path, monkeypatch, capsys):
    """The retrain would record the same kind of tree it replaces; a plain run only warns."""
    driver = _driver()
    sweep_file = tmp_path / "tiny_cells.yaml"
    sweep_file.write_text("hydra:\n  sweeper:\n    params:\n      seed: 0,1\n")
    monkeypatch.setattr(driver, "uncommitted_changes", lambda: ["captioner/model/decoder.py"])
    monkeypatch.setattr(driver.KeptSweep, "train", lambda *_: pytest.fail("trained from a dirty tree"))
    with pytest.raises(SystemExit) as stopped:
        driver.main(["--sweep", str(sweep_file), "--retrain-dirty"])
    assert stopped.value.code == 2
    assert "uncommitted changes (captioner/model/decoder.py)" in capsys.readouterr().err
    driver.main(["--sweep", str(sweep_file), "--retrain-dirty", "--dry-run", "--only", "seed=1"])
    assert capsys.readouterr().out.splitlines() == [
        "1 of 1 runs missing: seed1",
        "warning: the checkout has uncommitted changes (captioner/model/decoder.py): "
        "runs trained now record them as dirty"]


def test_uncommitted_changes_name_what_a_run_would_record_as_dirty(tmp_path):
    from tests.test_provenance import repository

    driver = _driver()
    repo = repository(tmp_path / "repo")
    assert driver.uncommitted_changes(repo) == []
    (repo / "model.py").write_text("hidden = 1024\n")
    (repo / "attention.py").write_text("new\n")
    assert driver.uncommitted_changes(repo) == ["model.py", "attention.py"]

KEPT_SWEEPS = sorted(path for path in (REPO / "sweeps").glob("*.yaml")
                     if (REPO / "docs" / path.stem / "runs").is_dir())


@pytest.mark.parametrize("sweep_file", KEPT_SWEEPS, ids=lambda p: p.stem)
def test_each_sweep_file_still_trains_the_config_of_its_kept_runs(sweep_file):
    """A default changed later (say, a recipe chosen on dev) must not make a sweep file train something
    other than its committed runs: a kept run's saved config equals what its cell composes today."""
    driver = _driver()
    sweep = driver.KeptSweep(sweep_file)
    kept = [cell for cell in sweep.cells() if sweep.is_kept(cell)]
    assert kept, f"{sweep_file.name}: no kept run"
    for cell in kept:
        saved = yaml.safe_load((sweep.kept / sweep.kept_name(cell) / ".hydra" / "config.yaml").read_text())
        assert not driver.config_differences(sweep.composed_config(cell), saved), (sweep_file.name, cell)


@pytest.mark.slow
def test_a_cut_off_run_goes_on_in_its_own_folder_and_is_kept_without_its_resume(tmp_path, monkeypatch):
    """The driver's runs span sessions: a cell whose newest run stopped with a checkpoint (here:
    finished, then marked preempted as a cut-off run's metrics.json says) is resumed in place with
    ckpt_path=last, and the kept overrides leave out the resume and where this machine keeps the
    data, so the report sees no new factor."""
    driver = _driver()
    sweep = tiny_training_sweep(tmp_path, monkeypatch)
    (cell,) = sweep.cells()
    run = sweep.train(cell)
    assert driver._completed(run) and sweep.newest_run(cell) == run
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "status": "preempted"}))
    assert driver._resumable(run) and not driver._resumable(None)
    assert sweep.train(cell, resume=run) == run and driver._completed(run)
    assert "ckpt_path=last" in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    kept = sweep.keep(run, cell)
    given = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    kept_overrides = yaml.safe_load((kept / ".hydra" / "overrides.yaml").read_text())
    assert kept_overrides == [o for o in given if not o.startswith(("ckpt_path=", "data_root="))]
    assert kept_overrides[0] == "seed=0" and len(kept_overrides) == len(given) - 2
    assert (kept / "resumed.txt").is_file()
    (run / "metrics.json").write_text(json.dumps({**metrics, "status": "failed"}))
    assert not driver._resumable(run)  # its error would come back: a failed run starts afresh
