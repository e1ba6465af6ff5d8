"""The sweep report on inputs that used to break or mislead it: test sets without a human baseline,
a rebuilt report's thumbnails, mixed measures in one table, failed and damaged runs, several sweeps
in one folder, a damaged speed.json, a non-UTF-8 locale and hostile text in the page."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
import yaml

from captioner.compare.report import main, swept_factors, write_report
from captioner.records.sweep_runs import collect_runs
from tests.test_report import GOOD, POOR, REFERENCES, completed, make_run, per_image_run

REPO = Path(__file__).resolve().parent.parent


def run_on(sweep: Path, job: int | str, overrides: list[str], captions: dict[str, str],
           cider: dict[str, float], references: dict[str, list[str]], **entry_extra: dict) -> Path:
    """A completed run with per-image scores on its own test set (`references`: image -> references)."""
    from captioner.scoring.bleu_statistics import bleu_counts

    folder = sweep / str(job)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "metrics.json").write_text(json.dumps(completed(sum(cider.values()) / len(cider), 0.2)))
    (folder / "captions.json").write_text(json.dumps([
        {"image_id": image, "caption": captions[image], "references": references[image],
         "cider": cider[image], "bleu_counts": bleu_counts(captions[image], references[image]),
         **{key: values[image] for key, values in entry_extra.items() if image in values}}
        for image in references]))
    return folder


def lines_starting(report: str, start: str) -> list[str]:
    return [line for line in report.splitlines() if line.startswith(start)]


def claim_line(report: str, words: str) -> str:
    return next(line for line in report.splitlines() if line.startswith("| ") and words in line)


# --- 1. a test set whose images have one reference each (IAPR, captions_per_image=1) ---

ONE_REFERENCE = {image: references[:1] for image, references in REFERENCES.items()}
HIGH = {"dog1": 2.0, "dog2": 1.8, "man1": 1.5, "man2": 1.6}
LOW = {"dog1": 0.4, "dog2": 0.2, "man1": 0.3, "man2": 0.1}


def test_a_test_set_of_one_reference_an_image_makes_only_the_human_comparisons_not_testable(tmp_path):
    run_on(tmp_path, 0, ["cnn=mobilenet_v2"], POOR, LOW, ONE_REFERENCE)
    run_on(tmp_path, 1, ["cnn=efficientnet_lite2"], GOOD, HIGH, ONE_REFERENCE)
    report = write_report(tmp_path, collect_runs(tmp_path)).read_text()
    assert (tmp_path / "report.html").is_file()
    (row,) = lines_starting(report, "| efficientnet_lite2 - mobilenet_v2 | all |")
    assert "+1.475 [" in row  # the effect on CIDEr-D needs no human baseline
    section = report.split("## Content groups against humans")[1].split("\n## ")[0]
    assert "not testable" in section and "no test image has two references" in section
    for claim in ("recognize[s] animals very well", "problems recognizing colors"):
        line = claim_line(report, claim)
        assert "**not testable here**" in line and "two references" in line


def test_a_swept_dataset_with_a_one_reference_test_set_is_not_testable_across_datasets(tmp_path):
    coco = {f"coco_{image}": references for image, references in REFERENCES.items()}
    iapr = {f"iapr_{image}": references[:1] for image, references in REFERENCES.items()}

    def keyed(values: dict, prefix: str) -> dict:
        return {f"{prefix}_{image}": value for image, value in values.items()}
    run_on(tmp_path, 0, ["dataset=coco", "cnn=a"], keyed(POOR, "coco"), keyed(LOW, "coco"), coco)
    run_on(tmp_path, 1, ["dataset=coco", "cnn=b"], keyed(GOOD, "coco"), keyed(HIGH, "coco"), coco)
    run_on(tmp_path, 2, ["dataset=iapr", "cnn=a"], keyed(POOR, "iapr"), keyed(LOW, "iapr"), iapr)
    run_on(tmp_path, 3, ["dataset=iapr", "cnn=b"], keyed(GOOD, "iapr"), keyed(HIGH, "iapr"), iapr)
    report = write_report(tmp_path, collect_runs(tmp_path)).read_text()
    (across,) = lines_starting(report, "| iapr - coco | all |")
    assert "not testable" in across
    assert "+1.475 [" in lines_starting(report, "| b - a | dataset=coco |")[0]  # within one test set
    assert "no test image has two references" in report
    claim = claim_line(report, "comparison of datasets")
    assert "no test image has two references" in claim and "no seed with every cell" not in claim


@pytest.mark.parametrize("damage, message", [
    ({"bleu_counts": 5}, "bleu_counts are 5, not a list of numbers"),
    ({"cider": "high"}, "cider is 'high', not a number"),
    ({"bleu_counts": ["a"] * 10}, "not a list of numbers"),
    (None, "not a caption entry"),
], ids=["counts-a-number", "cider-text", "counts-text", "entry-not-a-mapping"])
def test_a_damaged_captions_json_is_named_and_left_out(tmp_path, caplog, damage, message):
    # a number where a list goes raised TypeError (a traceback); text where a number goes failed
    # the report at sweep end (exit 0, no report) or exited 2 without naming the file
    per_image_run(tmp_path, 0, ["rnn=gru"], POOR, LOW)
    per_image_run(tmp_path, 1, ["rnn=lstm"], GOOD, HIGH)
    path = tmp_path / "0" / "captions.json"
    entries = json.loads(path.read_text())
    entries[0] = {**entries[0], **damage} if damage else 1
    path.write_text(json.dumps(entries))
    with caplog.at_level(logging.WARNING):
        runs = collect_runs(tmp_path)
    assert f"{path}: left out of the report's per-image comparisons" in caplog.text and message in caplog.text
    assert runs[0].per_image is None and runs[1].per_image is not None
    write_report(tmp_path, runs)
    assert (tmp_path / "report.md").is_file()


def test_captions_of_a_wrong_shape_are_named_and_left_out_and_the_report_is_made(tmp_path, capsys, caplog):
    # BLEU counts of another length than a run writes: the scores cannot be computed from them (the
    # report failed with a traceback; a damaged captions.json was left out without a word)
    per_image_run(tmp_path, 0, ["rnn=gru"], POOR, LOW)
    folder = tmp_path / "0"
    per_image_run(tmp_path, 1, ["rnn=lstm"], GOOD, HIGH)
    entries = json.loads((folder / "captions.json").read_text())
    for entry in entries:
        entry["bleu_counts"] = entry["bleu_counts"][:6]
    (folder / "captions.json").write_text(json.dumps(entries))
    with caplog.at_level(logging.WARNING):
        main([str(tmp_path), "--resamples", "100"])
    assert f"{folder / 'captions.json'}: left out of the report's per-image comparisons" in caplog.text
    assert "bleu_counts hold 6 values, not BLEU's 10" in caplog.text
    assert (tmp_path / "report.md").is_file() and "wrote" in capsys.readouterr().out


# --- 2. thumbnails: one name, one source ---

def _solid(path: Path, colour: tuple[int, int, int]) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path)
    return path


def _colour(path: Path) -> tuple[int, ...]:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB").getpixel((10, 10))


def _close(found: tuple[int, ...], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 8 for a, b in zip(found, expected, strict=True))


def test_a_rebuilt_report_shows_each_runs_own_attention_figure_in_its_column(tmp_path):
    from captioner.compare.content_groups import load_groups
    from captioner.compare.html_report import browser_data

    colours = {0: (250, 0, 0), 1: (0, 0, 250)}
    for job in (0, 1):
        folder = run_on(tmp_path, job, [f"rnn={('gru', 'lstm')[job]}"], POOR, LOW, REFERENCES,
                        attention={"dog1": "plots/dog1.png"})
        _solid(folder / "plots" / "dog1.png", colours[job])
    metrics = tmp_path / "0" / "metrics.json"
    finished = metrics.read_text()
    metrics.write_text(json.dumps({"status": "running", "pid": 1, "host": "elsewhere"}))
    runs = collect_runs(tmp_path)  # while run 0 still runs, run 1 is the page's first column
    first = browser_data(runs, swept_factors(runs), load_groups(), tmp_path)
    (dog1,) = [image for image in first["images"] if image["id"] == "dog1"]
    assert _close(_colour(tmp_path / dog1["attention"][0]), colours[1])
    metrics.write_text(finished)
    runs = collect_runs(tmp_path)
    again = browser_data(runs, swept_factors(runs), load_groups(), tmp_path)
    (dog1,) = [image for image in again["images"] if image["id"] == "dog1"]
    assert _close(_colour(tmp_path / dog1["attention"][0]), colours[0])
    assert _close(_colour(tmp_path / dog1["attention"][1]), colours[1])


def test_image_ids_that_differ_only_in_odd_characters_keep_their_own_photos(tmp_path):
    from captioner.compare.html_report import prune_thumbnails

    references = {"a b": REFERENCES["dog1"], "a_b": REFERENCES["man1"]}
    photos = {"a b": _solid(tmp_path / "photos" / "one.jpg", (250, 0, 0)),
              "a_b": _solid(tmp_path / "photos" / "two.jpg", (0, 0, 250))}
    sweep = tmp_path / "sweep"
    for job, rnn in enumerate(("gru", "lstm")):
        run_on(sweep, job, [f"rnn={rnn}"], {"a b": "a dog", "a_b": "a man"}, {"a b": 0.5 + job, "a_b": 0.2},
               references, image={image: str(path) for image, path in photos.items()})
    write_report(sweep, collect_runs(sweep))
    data = json.loads((sweep / "report.html").read_text().split('id="data">')[1].split("</script>")[0])
    shown = {image["id"]: image["photo"] for image in data["images"]}
    assert shown["a b"] != shown["a_b"]
    assert _close(_colour(sweep / shown["a b"]), (250, 0, 0))
    assert _close(_colour(sweep / shown["a_b"]), (0, 0, 250))
    prune_thumbnails(sweep, data)  # the page's own thumbnails stay
    kept = sorted(p.name for p in (sweep / "report_images").iterdir())
    assert kept == sorted(Path(p).name for p in shown.values())


# --- 3. each row of a comparison table says its measure ---

def test_every_comparison_row_names_its_own_measure(tmp_path):
    flickr = {f"f_{image}": references for image, references in REFERENCES.items()}
    coco = {f"c_{image}": references for image, references in REFERENCES.items()}

    def keyed(values: dict, prefix: str) -> dict:
        return {f"{prefix}_{image}": value for image, value in values.items()}
    for job, (dataset, cnn, captions, cider) in enumerate([
            ("flickr8k", "a", POOR, LOW), ("flickr8k", "b", GOOD, HIGH),
            ("coco", "a", POOR, LOW), ("coco", "b", GOOD, HIGH)]):
        prefix, references = ("f", flickr) if dataset == "flickr8k" else ("c", coco)
        run_on(tmp_path, job, [f"dataset={dataset}", f"cnn={cnn}"], keyed(captions, prefix),
               keyed(cider, prefix), references)
    report = write_report(tmp_path, collect_runs(tmp_path)).read_text()
    (across,) = lines_starting(report, "| b - a | all |")  # across test sets: model/human ratios
    (within,) = lines_starting(report, "| b - a | dataset=flickr8k |")  # one test set: raw CIDEr-D
    assert "| model/human CIDEr-D |" in across
    assert "| CIDEr-D |" in within and "model/human" not in within


# --- 4. factors and levels come from the completed runs ---

def test_a_level_whose_runs_all_failed_is_not_the_reference_and_a_damaged_run_adds_no_factor(tmp_path):
    make_run(tmp_path, 0, ["data_root=/d", "cnn=vgg16"], {"status": "failed", "error": "out of memory"})
    per_image_run(tmp_path, 1, ["data_root=/d", "cnn=mobilenet_v2"], POOR, LOW)
    per_image_run(tmp_path, 2, ["data_root=/d", "cnn=efficientnet_lite2"], GOOD, HIGH)
    (tmp_path / "3" / ".hydra").mkdir(parents=True)
    (tmp_path / "3" / ".hydra" / "overrides.yaml").write_text("[cnn=vgg16, {unclosed")
    runs = collect_runs(tmp_path)
    assert swept_factors(runs) == ["cnn"]  # not data_root, which only the damaged run lacks
    report = write_report(tmp_path, runs).read_text()
    (row,) = lines_starting(report, "| efficientnet_lite2 - mobilenet_v2 | all |")
    assert "+1.475 [" in row
    assert "- vgg16 |" not in report and "Shared overrides: data_root=/d" in report


# --- 5. several sweeps in one folder ---

def test_runs_of_several_sweeps_in_one_folder_are_ordered_and_named_by_their_path(tmp_path, caplog):
    per_image_run(tmp_path / "B", 0, ["cnn=mobilenet_v2"], POOR, LOW)
    per_image_run(tmp_path / "A", 1, ["cnn=efficientnet_lite2"], GOOD, HIGH)
    per_image_run(tmp_path / "A", 0, ["cnn=mobilenet_v2"], GOOD, HIGH)
    runs = collect_runs(tmp_path)
    assert [r.path.relative_to(tmp_path).as_posix() for r in runs] == ["A/0", "A/1", "B/0"]
    assert [r.name for r in runs] == ["A/0", "A/1", "B/0"]
    with caplog.at_level(logging.WARNING):
        report = write_report(tmp_path, runs).read_text()
    assert "| A/0 | cnn=mobilenet_v2 | completed |" in report and "| B/0 | cnn=mobilenet_v2 |" in report
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(tmp_path / "A" / "0") in m and str(tmp_path / "B" / "0") in m for m in warned)
    # the first of the two (A/0, GOOD) is the one compared
    assert "+0.000 [" in lines_starting(report, "| efficientnet_lite2 - mobilenet_v2 | all |")[0]


def test_one_sweeps_runs_keep_their_plain_names(tmp_path):
    per_image_run(tmp_path, 0, ["rnn=gru"], POOR, LOW)
    per_image_run(tmp_path, 1, ["rnn=lstm"], GOOD, HIGH)
    assert [r.name for r in collect_runs(tmp_path)] == ["0", "1"]


# --- 6. a damaged speed.json ---

def test_a_damaged_speed_record_is_named_and_the_rest_of_the_report_stands(tmp_path):
    per_image_run(tmp_path, 0, ["rnn=gru"], POOR, LOW)
    per_image_run(tmp_path, 1, ["rnn=lstm"], GOOD, HIGH)
    (tmp_path / "speed.json").write_text('{"seconds": {"gru": [1.0, 1.1')  # cut off
    report = write_report(tmp_path, collect_runs(tmp_path)).read_text()
    speed = report.split("## Speed")[1].split("\n## ")[0]
    assert "not testable" in speed and f"{tmp_path / 'speed.json'}: not a speed record" in speed
    assert lines_starting(report, "| lstm - gru | all |")
    assert str(tmp_path / "speed.json") in claim_line(report, "GRU was fast")


def test_a_speed_record_with_too_few_timings_says_so_rather_than_that_there_is_none(tmp_path):
    from captioner.records.speed_record import SpeedRecord

    per_image_run(tmp_path, 0, ["rnn=gru"], POOR, LOW)
    per_image_run(tmp_path, 1, ["rnn=lstm"], GOOD, HIGH)
    SpeedRecord({"gru": [1.0, 1.1, 1.0], "lstm": [1.2, 1.3, 1.2]}, ["gru", "lstm"] * 3, "m", "c"
                ).write(tmp_path / "speed.json")
    report = write_report(tmp_path, collect_runs(tmp_path)).read_text()
    speed = report.split("## Speed")[1].split("\n## ")[0]
    assert "not testable" in speed and "needs 5+ timings per arm, got 3" in speed
    assert "no interleaved timing record" not in claim_line(report, "GRU was fast")


# --- 7. text files are UTF-8 whatever the locale says ---

def test_the_report_and_atomic_writes_are_utf8_under_an_ascii_locale(tmp_path):
    make_run(tmp_path, 0, ["seed=0"], completed(1.0, 0.2))
    make_run(tmp_path, 1, ["seed=1"], {"status": "failed", "error": "ValueError: café ± ünïcode"})
    script = ("import sys; from pathlib import Path\n"
              "from captioner.compare.report import write_report\n"
              "from captioner.paths import write_atomically\n"
              "from captioner.records.sweep_runs import collect_runs\n"
              "folder = Path(sys.argv[1]); write_report(folder, collect_runs(folder))\n"
              "write_atomically(folder / 'note.txt', 'caf\\u00e9 \\u00b1')\n")  # ASCII: argv is decoded
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    check = subprocess.run([sys.executable, "-c", "import locale; print(locale.getpreferredencoding())"],
                           env=env, capture_output=True, text=True, check=True)
    assert "utf" not in check.stdout.lower()  # the locale really is not UTF-8
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, cwd=REPO, check=True,
                   capture_output=True)
    assert "café ± ünïcode" in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "café ± ünïcode" in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert (tmp_path / "note.txt").read_bytes() == "café ±".encode()


# --- 8. the page's data and URLs ---

def test_the_pages_data_cannot_open_a_comment_or_script_and_photo_urls_are_quoted(tmp_path):
    from captioner.compare.content_groups import load_groups
    from captioner.compare.html_report import browser_data, write_html_report

    hostile = "<!-- <script>alert(1)</script> & more"
    photos = {image: _solid(tmp_path / "50% #1?" / f"{image}.jpg", (n * 50, 100, 100))
              for n, image in enumerate(REFERENCES)}
    sweep = tmp_path / "sweep"
    for job, rnn in enumerate(("gru", "lstm")):
        run_on(sweep, job, [f"rnn={rnn}"], {**POOR, "dog1": hostile}, {**LOW, "dog1": 0.4 + 2 * job},
               REFERENCES, image={image: str(path) for image, path in photos.items()})
    runs = collect_runs(sweep)
    data = browser_data(runs, swept_factors(runs), load_groups(), sweep, max_images=2)
    page = write_html_report(sweep, "# report", data).read_text(encoding="utf-8")
    payload = page.split('<script type="application/json" id="data">')[1].split("</script>")[0]
    assert "<" not in payload and ">" not in payload and "&" not in payload
    assert json.loads(payload) == json.loads(json.dumps(data))
    assert data["sample"]  # linked from the dataset, as URLs
    for image in data["sample"]:
        assert image["photo"] == quote(f"../50% #1?/{image['id']}.jpg")
        assert (sweep / unquote(image["photo"])).is_file()
