"""The sweep report on run folders laid out as Hydra leaves them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from captioner.compare.report import main, main_effects, print_report, swept_factors, write_report
from captioner.records.sweep_runs import collect_runs


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


def test_a_report_cut_off_midway_leaves_the_last_whole_one(sweep, monkeypatch):
    """The charts, report.md and report.html are one set: a failure while writing the page (a full
    disk, a kill) used to leave a new report.md beside the old page, and new charts beside both."""
    import captioner.compare.report as report_module

    write_report(sweep, collect_runs(sweep))
    written = {p.name: p.read_bytes() for p in sweep.iterdir() if p.is_file()}
    assert {"report.md", "report.html", "effects_cnn.png", "val_cider.png"} <= set(written)
    make_run(sweep, 4, ["data_root=/d", "cnn=resnet101", "rnn=lstm"], completed(4.0, 0.5))  # a new run

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_module, "write_html_report", disk_full)  # the last file written
    with pytest.raises(OSError, match="No space left"):
        write_report(sweep, collect_runs(sweep))
    assert {p.name: p.read_bytes() for p in sweep.iterdir() if p.is_file()} == written
    assert not [p for p in sweep.iterdir() if ".partial" in p.name]  # no staging left behind

    (sweep / ".report.md.set.partial-4194999").mkdir()  # a writer killed midway (no such process)

    monkeypatch.undo()
    report = write_report(sweep, collect_runs(sweep)).read_text()
    assert "| 4 | cnn=resnet101 rnn=lstm | completed |" in report
    assert (sweep / "report.html").read_bytes() != written["report.html"]  # the page followed
    assert not [p for p in sweep.iterdir() if ".partial" in p.name]  # the killed writer's set is gone


def test_the_console_table_has_a_header_for_every_column(sweep, capsys):
    print_report(collect_runs(sweep))
    printed = capsys.readouterr().out
    assert "s/epoch" in printed and "captions/s" in printed  # the last two columns had none


def test_the_report_says_which_code_trained_the_runs_and_which_had_uncommitted_changes(tmp_path):
    code = {"git_commit": "a" * 40, "git_dirty": False}
    make_run(tmp_path, 0, ["seed=0"], {**completed(1.0, 0.2), "provenance": code})
    make_run(tmp_path, 1, ["seed=1"], {**completed(1.1, 0.2), "provenance": {**code, "git_dirty": True}})
    make_run(tmp_path, 2, ["seed=2"], {**completed(1.2, 0.2), "provenance": {**code, "git_commit": "b" * 40}})
    make_run(tmp_path, 3, ["seed=3"], completed(1.3, 0.2))  # from before runs recorded their code
    runs = collect_runs(tmp_path)
    assert [(r.commit, r.uncommitted_changes) for r in runs] == [
        ("a" * 40, False), ("a" * 40, True), ("b" * 40, False), (None, False)]
    report = write_report(tmp_path, runs).read_text()
    assert ("Code: 2 runs from aaaaaaa, 1 run from bbbbbbb, 1 without a record. With uncommitted "
            "changes on top (their `code.diff`, where kept, holds them): 1.") in report


@pytest.mark.parametrize("damage", [
    {"test": {"cider": None}}, {"test": []}, {"test": {"cider": "high"}},
    {"history": [{"cider": 0.5}], "epochs": "two"}])
def test_a_damaged_run_is_reported_missing_with_its_file_named_and_the_others_stand(sweep, damage):
    make_run(sweep, 4, ["data_root=/d", "cnn=vgg16", "rnn=gru", "seed=1"], {**completed(1.0, 0.2), **damage})
    (sweep / "5" / ".hydra").mkdir(parents=True)
    (sweep / "5" / ".hydra" / "overrides.yaml").write_text("[cnn=vgg16, {unclosed")
    runs = collect_runs(sweep)
    statuses = {r.path.name: (r.status, r.error) for r in runs}
    if "history" in damage:  # an entry without its epoch is left out; the rest of the run stands
        assert statuses["4"][0] == "completed" and runs[4].history == []
    else:
        assert statuses["4"][0] == "missing" and str(sweep / "4" / "metrics.json") in statuses["4"][1]
    assert statuses["5"][0] == "missing" and "overrides.yaml" in statuses["5"][1]
    report = write_report(sweep, runs).read_text()
    assert "| 0 | " in report and "| 5 | " in report


def test_a_sweep_whose_report_cannot_be_written_exits_1_not_0(sweep, monkeypatch):
    # Hydra turns an exception in on_multirun_end into a warning, and the sweep exited 0.
    from omegaconf import OmegaConf

    import captioner.compare.sweep_end as sweep_end

    def refused(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sweep_end, "write_report", refused)
    config = OmegaConf.create({"hydra": {"job": {"name": "train"}, "sweep": {"dir": str(sweep)}},
                               "sweep_name": "multirun", "logger": {}})
    for runs in (sweep, None):  # with a failed run in the sweep, and with every run completed
        if runs is None:
            for job in ("3", "10"):
                (sweep / job / ".hydra" / "overrides.yaml").unlink()
        with pytest.raises(SystemExit) as stopped:
            sweep_end.ReportAtSweepEnd().on_multirun_end(config)
        assert stopped.value.code == 1


def test_a_folder_without_runs_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "no runs found" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, message", [
    ("--resamples", "0", "--resamples must be at least 100, got 0"),
    ("--resamples", "-3", "--resamples must be at least 100"),
    ("--html-images", "0", "--html-images must be at least 1")])
def test_report_options_that_would_mislead_are_refused(sweep, capsys, option, value, message):
    # 0 resamples gave zero-width intervals: every difference looked real
    with pytest.raises(SystemExit) as stopped:
        main([str(sweep), option, value])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert not (sweep / "report.md").exists()


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


REFERENCES = {
    "dog1": ["a brown dog runs on grass", "a dog runs", "a brown dog in a field", "two people", "grass"],
    "dog2": ["a black dog jumps", "the dog jumps over a log", "a dog in the air", "a dog", "a log"],
    "man1": ["a man in a red shirt", "a man climbs", "a person on a rock", "a red shirt", "a climber"],
    "man2": ["a woman sits on a bench", "a woman reads", "a lady on a bench", "a person", "a bench"],
}


def per_image_run(sweep: Path, job: int, overrides: list[str], captions: dict[str, str],
                  cider: dict[str, float], seconds: float = 10.0) -> None:
    """A completed run whose captions.json holds per-image scores, as a run writes it."""
    from captioner.scoring.bleu_statistics import bleu_counts

    metrics = completed(sum(cider.values()) / len(cider), 0.2)
    metrics.update(train_time_s=seconds * 2, test_captions_per_s=50.0)
    make_run(sweep, job, overrides, metrics)
    (sweep / str(job) / "captions.json").write_text(json.dumps([
        {"image_id": image, "caption": captions[image], "references": REFERENCES[image],
         "cider": cider[image], "bleu_counts": bleu_counts(captions[image], REFERENCES[image])}
        for image in REFERENCES]))


def _row(report: str, start: str, within: str = "all") -> str:
    return next(line for line in report.splitlines() if line.startswith(f"| {start} | {within} |"))


GOOD = {"dog1": "a brown dog runs on grass", "dog2": "a dog jumps", "man1": "a man in a red shirt",
        "man2": "a woman on a bench"}
POOR = {"dog1": "a dog", "dog2": "a log", "man1": "a rock", "man2": "a bench"}


def test_one_run_a_setting_gives_image_intervals_human_baselines_and_no_verdict(tmp_path):
    high = {"dog1": 2.0, "dog2": 1.8, "man1": 1.5, "man2": 1.6}
    low = {"dog1": 0.4, "dog2": 0.2, "man1": 0.3, "man2": 0.1}
    per_image_run(tmp_path, 0, ["cnn=mobilenet_v2", "rnn=gru"], POOR, low, seconds=10)
    per_image_run(tmp_path, 1, ["cnn=mobilenet_v2", "rnn=lstm"], POOR, low, seconds=14)
    per_image_run(tmp_path, 2, ["cnn=efficientnet_lite2", "rnn=gru"], GOOD, high, seconds=12)
    make_run(tmp_path, 3, ["cnn=efficientnet_lite2", "rnn=lstm"],
             {"status": "running", "pid": 1, "host": "far"})
    report = write_report(tmp_path, collect_runs(tmp_path)).read_text()

    # every image better by 1.2-1.6 (mean 1.475): the image interval leaves out 0, but one seed a side
    # cannot say how training's randomness moves it
    row = _row(report, "efficientnet_lite2 - mobilenet_v2")
    assert "+1.475 [" in row and "**inconclusive (1 seed)**" in row and row.endswith("| 1 |")
    assert "| lstm - gru | all | +0.000 [+0.000, +0.000] | **inconclusive (1 seed)** |" in report
    # content groups against the human baseline: 2 images of dogs, 2 of people
    people = next(line for line in report.splitlines() if line.startswith("| people |"))
    animals = next(line for line in report.splitlines() if line.startswith("| animals |"))
    assert people.split(" | ")[1] == "2" and animals.split(" | ")[1] == "2"
    assert "(names 1.00)" in animals and "(names 0.50)" in animals  # GOOD names both dogs, POOR one
    claims = {line.split(" | ")[0].lstrip("| "): line for line in report.splitlines() if "| **" in line}
    assert "**inconclusive**" in next(v for k, v in claims.items() if "Inception gave significantly" in k)
    assert "efficientnet_lite2 (77.5%) against mobilenet_v2 (71.9%)" in report
    assert "GRU 11, LSTM 14" in next(v for k, v in claims.items() if "GRU was fast" in k)
    assert "**not testable here**" in next(v for k, v in claims.items() if "InceptionResNetV2" in k)


def test_runs_scored_on_other_test_sets_are_compared_through_their_human_baselines(tmp_path):
    cider = {"dog1": 1.0, "dog2": 0.5, "man1": 0.7, "man2": 0.2}
    per_image_run(tmp_path, 0, ["dataset=a"], GOOD, cider)
    per_image_run(tmp_path, 1, ["dataset=b"], GOOD, {k: v + 0.1 for k, v in cider.items()})
    entries = json.loads((tmp_path / "1" / "captions.json").read_text())
    entries[0]["image_id"] = "another"  # a different test set
    (tmp_path / "1" / "captions.json").write_text(json.dumps(entries))
    report = write_report(tmp_path, collect_runs(tmp_path)).read_text()
    row = _row(report, "b - a")
    assert "model/human CIDEr-D" in report and "+0.100" not in row  # not the raw difference
    assert "significant" not in row and "unpaired" not in report
    claim = next(line for line in report.splitlines() if "comparison of datasets" in line)
    assert "model/human CIDEr-D" in claim and "never on raw differences" in claim


def test_a_bad_content_groups_file_is_named(tmp_path, capsys):
    per_image_run(tmp_path, 0, ["rnn=gru"], GOOD, {k: 1.0 for k in GOOD})
    groups = tmp_path / "groups.yaml"
    groups.write_text("people: man\n")
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--groups", str(groups)])
    assert f"{groups}: expected `group: [word, ...]`" in capsys.readouterr().err


def _sweep_with_photos(folder: Path) -> Path:
    from PIL import Image

    photos = {}
    for n, image in enumerate(REFERENCES):
        photos[image] = folder / "photos" / f"{image}.jpg"
        photos[image].parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (320, 240), (60 * n, 120, 200 - 40 * n)).save(photos[image])
    sweep = folder / "sweep"
    per_image_run(sweep, 0, ["rnn=gru"], POOR, {"dog1": 0.4, "dog2": 0.2, "man1": 0.3, "man2": 0.1})
    per_image_run(sweep, 1, ["rnn=lstm"], GOOD, {"dog1": 2.0, "dog2": 0.3, "man1": 1.5, "man2": 0.2})
    for job in (0, 1):
        captions = sweep / str(job) / "captions.json"
        entries = json.loads(captions.read_text())
        for entry in entries:
            entry["image"] = str(photos[entry["image_id"]])
        captions.write_text(json.dumps(entries))
    write_report(sweep, collect_runs(sweep))
    return sweep


def test_report_html_holds_the_tables_and_every_image_with_each_runs_caption(tmp_path):
    sweep = _sweep_with_photos(tmp_path)
    page = (sweep / "report.html").read_text()
    assert "<h2>Test scores</h2>" in page and "<td>rnn=lstm</td>" in page
    assert "lstm - gru" in page and "data:image/png;base64," in page  # effects and inlined charts
    assert "http://" not in page and "https://" not in page and "<script src" not in page  # offline
    data = json.loads(page.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    assert data["runs"] == ["rnn=gru", "rnn=lstm"]
    # sorted by how much the runs disagree: dog1 (0.4 against 2.0) first, dog2 (0.2 against 0.3) last
    assert [image["id"] for image in data["images"]] == ["dog1", "man1", "man2", "dog2"]
    first = data["images"][0]
    assert first["captions"] == [POOR["dog1"], GOOD["dog1"]] and first["cider"] == [0.4, 2.0]
    assert first["groups"] == ["animals"] and first["references"] == REFERENCES["dog1"]
    assert (sweep / first["photo"]).is_file() and first["photo"].startswith("report_images/")


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="needs Chromium (Debian: apt-get install chromium)")
def test_report_html_renders_and_filters_in_a_real_headless_browser(tmp_path):
    import re
    import subprocess

    sweep = _sweep_with_photos(tmp_path)
    page = (sweep / "report.html").as_uri()

    def rendered(fragment: str = "") -> str:
        options = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
        result = subprocess.run([_chromium(), *options, "--dump-dom", page + fragment], capture_output=True,
                                text=True, timeout=120, check=True)
        return result.stdout

    everything = rendered()
    assert len(re.findall(r'class="card"', everything)) == 4
    assert len(re.findall(r'<tr class="caption"', everything)) == 8  # 4 images x 2 runs
    assert "4 of 4 images" in everything
    assert re.search(r'src="report_images/dog1-[0-9a-f]{20}\.jpg"', everything)  # its name: html_report.py
    animals = rendered("#group=animals")
    assert re.findall(r'data-image="(\w+)"', animals) == ["dog1", "dog2"] and "2 of 4 images" in animals
    one_run = rendered("#runs=1")
    assert re.findall(r'<tr class="caption" data-run="(\d)"', one_run) == ["1"] * 4
    screenshot = tmp_path / "report.png"  # kept in pytest's tmp folder, to look at
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}",
                    "--window-size=1200,1600", page + "#group=animals"], capture_output=True, timeout=120,
                   check=True)
    assert screenshot.stat().st_size > 10_000


def test_the_per_image_comparison_goes_to_a_wandb_table_offline(tmp_path, monkeypatch):
    from captioner.compare.content_groups import load_groups
    from captioner.compare.html_report import browser_data
    from captioner.compare.wandb_table import log_comparison_table

    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = _sweep_with_photos(tmp_path)
    runs = collect_runs(sweep)
    data = browser_data(runs, swept_factors(runs), load_groups(), sweep)
    run = log_comparison_table(sweep, data, group="smoke-2026-01-01_00-00-00")
    assert run.group == "smoke-2026-01-01_00-00-00" and run.name.endswith("-comparison")
    (written,) = sweep.glob("wandb/offline-run-*/files/media/table/comparison/test_images_*.table.json")
    table = json.loads(written.read_text())
    assert table["columns"][5:] == ["rnn=gru: caption", "rnn=gru: CIDEr-D", "rnn=lstm: caption",
                                    "rnn=lstm: CIDEr-D"]
    assert [row[0] for row in table["data"]] == ["dog1", "man1", "man2", "dog2"]
    assert table["data"][0][5:] == [POOR["dog1"], 0.4, GOOD["dog1"], 2.0]


def seeded_sweep(sweep: Path, cnn_effect: float = 0.3, seeds: int = 3) -> Path:
    """2 CNNs x 2 RNNs x `seeds` seeds with a known truth: the stronger CNN adds `cnn_effect` CIDEr-D to
    every image, the RNN adds nothing, and each seed shifts its runs by a few thousandths."""
    base = {"dog1": 0.9, "dog2": 0.7, "man1": 0.5, "man2": 0.4}
    job = 0
    for seed in range(seeds):
        for cnn in ("mobilenet_v2", "efficientnet_lite2"):
            for rnn in ("gru", "lstm"):
                shift = 0.002 * (seed - 1) + (0.001 if rnn == "lstm" else 0) * (seed % 2)
                lift = cnn_effect if cnn == "efficientnet_lite2" else 0.0
                per_image_run(sweep, job, [f"cnn={cnn}", f"rnn={rnn}", f"seed={seed}"],
                              GOOD if lift else POOR, {k: v + lift + shift for k, v in base.items()},
                              seconds=10 + 4 * (rnn == "lstm"))
                job += 1
    return sweep


def test_verdicts_follow_the_rule_with_seeds_and_images_together(tmp_path):
    report = write_report(seeded_sweep(tmp_path), collect_runs(tmp_path)).read_text()
    assert "This report reads **" in report and "Holm" in report
    row = _row(report, "efficientnet_lite2 - mobilenet_v2")
    assert "+0.300 [" in row and "**better**" in row and row.endswith("| 3 |")
    row = _row(report, "lstm - gru")
    assert "**equivalent**" in row
    for within in ("rnn=gru", "rnn=lstm"):  # the effect inside each other setting is shown too
        assert "**better**" in _row(report, "efficientnet_lite2 - mobilenet_v2", within)
    assert "(efficientnet_lite2 - mobilenet_v2) at rnn=lstm - at rnn=gru" in report  # the interaction
    claims = {line.split(" | ")[0].lstrip("| "): line for line in report.splitlines() if "| **" in line}
    assert "**reproduced**" in next(v for k, v in claims.items() if "Inception gave significantly" in k)
    assert "**reproduced**" in next(v for k, v in claims.items() if "LSTM did not show" in k)
    # no interleaved timings: s/epoch is shown, not judged
    gru_claim = next(v for k, v in claims.items() if "GRU was fast" in k)
    assert "**inconclusive**" in gru_claim and "not judged" in gru_claim
    assert (tmp_path / "verdicts.png").stat().st_size > 1000


def test_every_interval_shown_is_at_the_rules_confidence(tmp_path):
    """A rule with alpha 0.01 judges on 99% intervals, so the report shows 99% ones (and 98% for
    TOST): a 95% interval that leaves out 0 beside an "inconclusive" would contradict the rule."""
    from dataclasses import replace

    from captioner.compare.content_groups import load_groups
    from captioner.compare.decision_rule import load_rule
    from captioner.compare.sweep_verdicts import SweepVerdicts

    runs = collect_runs(seeded_sweep(tmp_path))
    strict = replace(load_rule(), alpha=0.01)
    report = write_report(tmp_path, runs, rule=strict, resamples=200).read_text()
    assert "**better/worse** when the 99% interval leaves out 0" in report
    assert "98% (thick)" in report and "99% (thin)" in report
    assert "estimate, 99% interval" in report and "95%" not in report
    verdicts = SweepVerdicts(runs, swept_factors(runs), strict, load_groups(), resamples=200)
    (effect,) = [j for j in verdicts.effects["cnn"] if not j.comparison.within]
    low, high = effect.comparison.estimate.interval(0.99)
    assert low < effect.comparison.estimate.interval(0.95)[0]  # wider, so the check below can fail
    assert f"[{low:+.3f}, {high:+.3f}]" in _row(report, "efficientnet_lite2 - mobilenet_v2")


def test_one_seed_a_cell_is_inconclusive_whatever_the_images_say(tmp_path):
    report = write_report(seeded_sweep(tmp_path, seeds=1), collect_runs(tmp_path)).read_text()
    row = _row(report, "efficientnet_lite2 - mobilenet_v2")
    assert "**inconclusive (1 seed)**" in row
    claims = [line for line in report.splitlines() if "Inception gave significantly" in line]
    assert "**inconclusive**" in claims[0]


def test_the_browser_says_which_images_it_holds_and_offers_a_random_sample_where_the_photos_are(tmp_path):
    import shutil

    from captioner.compare.content_groups import load_groups
    from captioner.compare.html_report import browser_data

    sweep = _sweep_with_photos(tmp_path)
    shutil.rmtree(sweep / "report_images")
    runs = collect_runs(sweep)
    data = browser_data(runs, swept_factors(runs), load_groups(), sweep, max_images=2)
    assert [image["id"] for image in data["images"]] == ["dog1", "man1"]
    assert data["selection"].startswith("The 2 of 4 test images where the runs' per-image CIDEr-D disagree")
    assert "animals 50% (test set 50%)" in data["selection"]
    # the other two, linked from where the photos are (not copied beside the report)
    assert sorted(image["id"] for image in data["sample"]) == ["dog2", "man2"]
    assert all(image["photo"].startswith("../photos/") for image in data["sample"])
    # named by their photo and a hash of its bytes (html_report.thumbnail_name)
    assert [p.name.split("-")[0] for p in sorted((sweep / "report_images").iterdir())] == ["dog1", "man1"]
    # without the photos (a report regenerated elsewhere) no sample is offered
    for photo in (tmp_path / "photos").iterdir():
        photo.unlink()
    assert browser_data(runs, swept_factors(runs), load_groups(), sweep, max_images=2)["sample"] == []
    everything = browser_data(runs, swept_factors(runs), load_groups(), sweep)
    assert everything["selection"] == "All 4 test images." and everything["sample"] == []


def test_the_effect_charts_carry_95_percent_error_bars_from_seeds_and_images(tmp_path):
    from matplotlib.container import ErrorbarContainer

    from captioner.compare.content_groups import load_groups
    from captioner.compare.decision_rule import load_rule
    from captioner.compare.report import effects_figure
    from captioner.compare.sweep_verdicts import SweepVerdicts

    runs = collect_runs(seeded_sweep(tmp_path))
    verdicts = SweepVerdicts(runs, swept_factors(runs), load_rule(), load_groups(), resamples=200)
    means = verdicts.cells.level_means("cnn", "cider")
    assert means["efficientnet_lite2"].value == pytest.approx(means["mobilenet_v2"].value + 0.3)
    assert all(m.seeds == 3 and m.interval()[1] > m.value for m in means.values())
    cider_axis = effects_figure(verdicts, "cnn").axes[0]
    (errorbar,) = [c for c in cider_axis.containers if isinstance(c, ErrorbarContainer)]
    low, high = means["mobilenet_v2"].interval()
    segment = errorbar.lines[2][0].get_segments()[0]  # the first level's error bar: (x, low), (x, high)
    assert segment[:, 1] == pytest.approx([low, high])


def test_pruning_thumbnails_removes_the_staging_files_killed_writers_left(tmp_path):
    # thumbnails are staged without a look through the folder after each (that was quadratic)
    import os
    import subprocess

    from captioner import paths
    from captioner.compare.html_report import prune_thumbnails

    folder = tmp_path / "report_images"
    folder.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    for name in ("a.jpg", "b.jpg", f".c.jpg.partial-{paths._host()}-{dead.pid}.0",
                 f".d.jpg.partial-{paths._host()}-{os.getppid()}.0"):
        (folder / name).write_bytes(b"x")
    prune_thumbnails(tmp_path, {"images": [{"photo": "report_images/a.jpg", "attention": []}]})
    assert sorted(p.name for p in folder.iterdir()) == [f".d.jpg.partial-{paths._host()}-{os.getppid()}.0",
                                                       "a.jpg"]
