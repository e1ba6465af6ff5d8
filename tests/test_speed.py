"""Speed claims from interleaved timings: the order, the record, and the verdict the report reads."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from captioner.compare.decision_rule import BETTER, EQUIVALENT, judge, load_rule
from captioner.compare.speed import interleaved_order, relative_time
from captioner.records.speed_record import SpeedRecord


def test_the_arms_alternate_which_goes_first():
    assert interleaved_order(["gru", "lstm"], 3) == ["gru", "lstm", "lstm", "gru", "gru", "lstm"]
    order = interleaved_order(["gru", "lstm"], 6)
    assert order.count("gru") == order.count("lstm") == 6
    # each arm runs first as often as second: a drift of the machine falls on both alike
    assert sum(order[i] == "gru" for i in range(0, 12, 2)) == 3


def test_a_speed_claim_needs_five_timings_and_reads_as_a_paired_ratio(tmp_path):
    gru, lstm = [10.0, 10.2, 9.9, 10.1, 10.0], [11.0, 11.3, 10.8, 11.1, 11.0]
    record = SpeedRecord({"gru": gru, "lstm": lstm}, interleaved_order(["gru", "lstm"], 5), "test machine",
                         "python benchmarks/cell_speed.py")
    relative = relative_time(record, "lstm", "gru")
    # the mean of the paired ratios, repeat by repeat (11.0 / 10.0 - 1, 11.3 / 10.2 - 1, ...): 0.0996
    paired = sum(slow / fast - 1 for slow, fast in zip(lstm, gru, strict=True)) / len(gru)
    assert relative.seeds == 5 and relative.value == pytest.approx(paired, rel=1e-12)
    assert judge("speed", relative, "speed", load_rule()).word == BETTER  # LSTM ~10% slower, GRU faster
    close = SpeedRecord({"gru": [10.0, 10.1, 9.9, 10.0, 10.0], "lstm": [10.0, 10.1, 10.0, 9.9, 10.0]},
                        [], "m", "c")
    close = relative_time(close, "lstm", "gru")
    assert judge("speed", close, "speed", load_rule()).word == EQUIVALENT  # inside 5%
    short = SpeedRecord({"gru": [1.0] * 4, "lstm": [1.1] * 4}, [], "m", "c")
    with pytest.raises(ValueError, match="5\\+ timings"):
        relative_time(short, "lstm", "gru")
    path = tmp_path / "speed.json"
    record.write(path)
    assert SpeedRecord.read(path) == record
    path.write_text(json.dumps({"seconds": {}}))
    with pytest.raises(ValueError, match=f"{path}: not a speed record"):
        SpeedRecord.read(path)


def test_a_write_that_fails_halfway_leaves_the_earlier_record_whole(tmp_path, monkeypatch):
    # Before, speed.json itself was written in place: a full disk left half a file, which the
    # sweep's report later refused as "not a speed record".
    path = tmp_path / "speed.json"
    earlier = SpeedRecord({"gru": [1.0] * 5, "lstm": [1.1] * 5}, [], "m", "c")
    earlier.write(path)

    def disk_full_halfway(self: Path, text: str, *args, **kwargs) -> int:
        with open(self, "w") as file:
            file.write(text[:len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full_halfway)
    with pytest.raises(OSError, match="No space left"):
        SpeedRecord({"gru": [2.0] * 5, "lstm": [2.2] * 5}, [], "m", "c").write(path)
    monkeypatch.undo()
    assert SpeedRecord.read(path) == earlier


def test_the_report_judges_the_speed_claim_on_the_record(tmp_path):
    from captioner.compare.report import write_report
    from captioner.records.sweep_runs import collect_runs
    from tests.test_report import seeded_sweep

    seeded_sweep(tmp_path)
    SpeedRecord({"gru": [10.0, 10.2, 9.9, 10.1, 10.0], "lstm": [11.0, 11.3, 10.8, 11.1, 11.0]},
                interleaved_order(["gru", "lstm"], 5), "test machine", "python benchmarks/cell_speed.py"
                ).write(tmp_path / "speed.json")
    report = write_report(tmp_path, collect_runs(tmp_path)).read_text()
    claim = next(line for line in report.splitlines() if "GRU was fast" in line)
    assert "**reproduced**" in claim and "interleaved timings, 5 per arm" in claim
    assert "## Speed" in report and "| LSTM time / GRU time - 1 (better: GRU faster) | all |" in report
