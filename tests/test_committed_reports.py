"""The committed sweep reports (docs/*/report.md) say what their own intervals and rule say, and the
committed Flickr8k comparison is made the way its driver says."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from captioner.compare.decision_rule import load_rule

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


def test_the_comparison_driver_runs_every_cell_seed_by_seed():
    driver = _driver()
    cells = driver.sweep_cells()
    assert len(cells) == 12 and [c["seed"] for c in cells] == ["0"] * 4 + ["1"] * 4 + ["2"] * 4
    assert driver.cell_name(cells[0]) == "mobilenet_v2-gru-seed0"
    assert {driver.cell_name(c) for c in cells} == {f"{cnn}-{rnn}-seed{s}" for cnn in
                                                     ("mobilenet_v2", "efficientnet_lite2")
                                                     for rnn in ("gru", "lstm") for s in "012"}


def test_the_driver_keeps_a_runs_small_results_and_only_completed_runs_count(tmp_path, monkeypatch):
    driver = _driver()
    monkeypatch.setattr(driver, "KEPT", tmp_path / "runs")
    run = tmp_path / "outputs" / "0"
    (run / ".hydra").mkdir(parents=True)
    for name in driver.KEPT_FILES:
        (run / name).write_text(json.dumps({"status": "completed"}) if name == "metrics.json" else name)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_text("weights")
    cell = {"cnn": "mobilenet_v2", "rnn": "gru", "seed": "0"}
    assert not driver.is_kept(cell)
    kept = driver.keep(run, cell)
    assert kept == tmp_path / "runs" / "00-mobilenet_v2-gru-seed0" and driver.is_kept(cell)
    kept_files = sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file())
    assert kept_files == sorted(driver.KEPT_FILES)  # no checkpoint
    (kept / "metrics.json").write_text(json.dumps({"status": "failed"}))
    assert not driver.is_kept(cell)
