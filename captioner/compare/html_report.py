"""report.html: the sweep report as a page to look at, beside report.md.

It holds everything report.md says (tables, intervals, claims; the charts inlined) and an image
browser: each test image with its references and every run's caption and per-image CIDEr-D,
sorted by how much the runs disagree, filtered by content group and by run. It needs no server
and no network: one HTML file with its script and data inline, and the photos (small JPEG copies)
in `report_images/` beside it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from PIL import Image

from captioner.compare.content_groups import ContentGroup
from captioner.features.upright_rgb import upright_rgb
from captioner.paths import remove_stale_staging, replace_durably, staged, write_atomically
from captioner.records.run_folder import RunFolder
from captioner.records.sweep_runs import RunResult
from captioner.sources import load_records

THUMBNAIL = 256  # px, the longer side of the photos copied beside the page
IMAGES_DIR = "report_images"


def markdown_to_html(markdown: str, folder: Path) -> str:
    """The markdown report.md uses (headings, tables, images, bold, italics, code, paragraphs) as HTML;
    images in `folder` are inlined."""
    out: list[str] = []
    table: list[list[str]] = []

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        text = re.sub(r"\*(.+?)\*", r"<i>\1</i>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    def close_table() -> None:
        if table:
            head, *body = table
            header = "".join(f"<th>{inline(c)}</th>" for c in head)
            rows = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in body)
            out.append(f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            if not re.fullmatch(r"\|(-+\|)+", line.strip()):  # not the |---| separator row
                table.append([c.strip() for c in line.strip().strip("|").split(" | ")])
            continue
        close_table()
        if match := re.fullmatch(r"(#{1,4}) (.*)", line):
            level = len(match[1])
            out.append(f"<h{level}>{inline(match[2])}</h{level}>")
        elif match := re.fullmatch(r"!\[(.*)\]\((.+)\)", line.strip()):
            out.append(_inlined_image(folder / match[2], match[1]))
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    close_table()
    return "\n".join(out)


def _inlined_image(path: Path, alt: str) -> str:
    if not path.is_file():
        return f"<p>({html.escape(path.name)} missing)</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="chart" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def image_paths(run: RunResult) -> dict[str, Path]:
    """image id -> photo, from captions.json's `image` (newer runs) or the run's dataset config."""
    paths = {image: Path(p) for image, p in run.image_files.items() if p}
    if paths:
        return paths
    dataset = RunFolder(run.path).recorded_dataset()
    if dataset is None:
        return {}
    try:  # an older run: read its dataset's records again, from where the run started
        records = load_records(*dataset)
    except Exception:  # moved data, ...: the browser shows no photos
        return {}
    return {r.image_id: Path(r.path) for r in records}


def _thumbnail(source: Path, target: Path) -> bool:
    # whole: written through a staging file, so a kill leaves none half-written; and of this very
    # picture (its name holds a hash of the source's bytes), whichever run or image shows it
    if target.is_file():
        return True
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # two report writers keep apart; what killed writers left goes with prune_thumbnails
        with staged(target, clean_up=False) as staging, Image.open(source) as image:
            image = upright_rgb(image)
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            image.save(staging, format="JPEG", quality=85)
            replace_durably(staging, target)
    except OSError:  # staged() removed what the failed write left
        return False
    return True


def browser_data(runs: Sequence[RunResult], factors: Sequence[str], groups: Sequence[ContentGroup],
                 folder: Path, max_images: int | None = None) -> dict[str, Any]:
    """The image browser's data: runs, and per test image its photo, references, groups and
    every run's caption, CIDEr-D and attention figure. Images where the runs disagree most first."""
    shown = [r for r in runs if r.status == "completed" and r.captions]
    images: dict[str, dict[str, Any]] = {}
    for column, run in enumerate(shown):
        cider = dict(zip(run.per_image.image_ids, run.per_image.cider.tolist(), strict=True)) \
            if run.per_image is not None else {}
        for image, caption in run.captions.items():
            entry = images.setdefault(image, {"id": image, "references": run.references.get(image, []),
                                              "captions": [None] * len(shown), "cider": [None] * len(shown),
                                              "attention": [None] * len(shown)})
            entry["captions"][column] = caption
            entry["cider"][column] = cider.get(image)
            if figure := run.attention_files.get(image):
                entry["attention"][column] = str(run.path / figure)
    for entry in images.values():
        values = [v for v in entry["cider"] if v is not None]
        mean = sum(values) / len(values) if values else 0.0
        entry["disagreement"] = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5 if values else 0.0
        entry["groups"] = [g.name for g in groups if g.shown_in(entry["references"])]
    everything = sorted(images.values(), key=lambda e: (-e["disagreement"], e["id"]))
    ordered = everything[:max_images or None]
    photos: dict[str, Path] = {}
    needed = {entry["id"] for entry in ordered}
    for run in shown:  # an older run's photos mean reading its dataset again: stop once all are found
        if needed <= photos.keys():
            break
        photos.update({k: v for k, v in image_paths(run).items() if k not in photos})
    for entry in ordered:
        entry["photo"] = _copied(photos.get(entry["id"]), folder)
        entry["attention"] = [_copied(Path(a), folder) if a else None for a in entry["attention"]]
    return {"runs": [r.label(factors) or r.name for r in shown], "groups": [g.name for g in groups],
            "images": ordered, "selection": selection(ordered, everything, groups),
            "sample": random_sample(everything, needed, photos, folder, len(ordered))}


def selection(shown: list[dict[str, Any]], everything: list[dict[str, Any]],
              groups: Sequence[ContentGroup]) -> str:
    """Which test images the browser holds, and how they differ from the test set."""
    if len(shown) == len(everything):
        return f"All {len(everything)} test images."

    def share(entries: list[dict[str, Any]], group: str) -> float:
        return sum(group in e["groups"] for e in entries) / max(len(entries), 1)
    mix = ", ".join(f"{g.name} {share(shown, g.name):.0%} (test set {share(everything, g.name):.0%})"
                    for g in groups)
    return (f"The {len(shown)} of {len(everything)} test images where the runs' per-image CIDEr-D "
            f"disagree most (largest spread across runs): chosen to show differences, not a sample of the "
            f"test set. What they show: {mix}.")


def random_sample(everything: list[dict[str, Any]], shown: set[str], photos: dict[str, Path], folder: Path,
                  size: int, seed: int = 0) -> list[dict[str, Any]]:
    """Where the dataset's photos are at hand: a random sample of the other test images, their photos
    linked where they are (not copied, so a committed report keeps only its own thumbnails)."""
    pool = [e for e in everything if e["id"] not in shown and e["id"] in photos and photos[e["id"]].is_file()]
    if not pool:
        return []
    chosen = random.Random(seed).sample(pool, min(size, len(pool)))
    return [{**entry, "attention": [None] * len(entry["attention"]),  # URLs: `#`, `?`, `%` quoted
             "photo": quote(Path(os.path.relpath(photos[entry["id"]], folder)).as_posix())}
            for entry in sorted(chosen, key=lambda e: e["id"])]


def thumbnail_name(source: Path) -> str | None:
    """The thumbnail's file name for `source`: its stem and a hash of its bytes, so that one name
    means one picture, the same on every machine (a committed report regenerates byte for byte).
    (Named by image id and run column, a report rebuilt after another run completed showed one
    run's figure in another's column; and ids `a b` and `a_b` shared a file.) None: unreadable."""
    try:
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:20]
    except OSError:
        return None
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', source.stem)[:40]}-{digest}.jpg"


def _copied(source: Path | None, folder: Path) -> str | None:
    """The URL of `source`'s thumbnail beside the page (made if not there yet), or None."""
    if source is None or (name := thumbnail_name(Path(source))) is None:
        return None
    target = folder / IMAGES_DIR / name
    return quote(f"{IMAGES_DIR}/{target.name}") if _thumbnail(Path(source), target) else None


def write_html_report(sweep_dir: Path, markdown: str, data: dict[str, Any], into: Path | None = None) -> Path:
    """report.html for the sweep folder: the report (`markdown`, its charts inlined from `into`) and
    the image browser (`data`: `browser_data`); written into `into` (default: the sweep folder),
    whose path it returns."""
    sweep_dir = Path(sweep_dir)
    into = sweep_dir if into is None else Path(into)
    # nothing in the data can close the script or open a comment (`<!--`, `<script`): in JSON
    # strings, \u003c and the like read back as the characters themselves
    payload = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    page = PAGE.replace("{{TITLE}}", html.escape(f"Sweep {sweep_dir.parent.name}/{sweep_dir.name}"))
    page = page.replace("{{REPORT}}", markdown_to_html(markdown, into)).replace("{{DATA}}", payload)
    path = into / "report.html"
    write_atomically(path, page)
    return path


def prune_thumbnails(sweep_dir: Path, data: dict[str, Any]) -> None:
    """Leave in report_images/ only the photos the page of `data` shows: a regenerated report
    (another selection of images) must not carry an earlier one's thumbnails along."""
    folder = Path(sweep_dir) / IMAGES_DIR
    if not folder.is_dir():
        return
    used = {Path(unquote(p)).name for image in data["images"]
            for p in [image.get("photo"), *image["attention"]] if p}
    for path in folder.glob("*.jpg"):
        if path.name not in used:
            path.unlink()
    remove_stale_staging(folder)  # what killed writers left (thumbnails are staged without a look each)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{TITLE}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
img.chart { max-width: 100%; display: block; margin: 0.5em 0; }
#controls { position: sticky; top: 0; background: #fff; padding: 0.5em 0; border-bottom: 1px solid #ccc; }
#controls label { margin-right: 1em; }
.card { display: flex; gap: 1em; border-bottom: 1px solid #ddd; padding: 0.8em 0; }
.card img.photo { width: 256px; height: auto; flex: none; }
.card img.attention { max-width: 420px; display: block; }
.card ul { margin: 0.2em 0; padding-left: 1.2em; color: #555; }
.score { font-variant-numeric: tabular-nums; }
.groups { color: #777; font-size: 0.85em; }
</style></head>
<body>
<main id="report">
{{REPORT}}
</main>
<section id="browser">
<h2>Test images, every run's caption</h2>
<p id="selection"></p>
<div id="controls">
<label>show <select id="show"><option value="images">the images above</option></select></label>
<label>sort <select id="sort"><option value="disagreement">runs disagree most</option>
<option value="worst">lowest mean CIDEr-D</option><option value="id">image id</option></select></label>
<label>group <select id="group"><option value="">all images</option></select></label>
<span id="run-filters"></span>
<span id="count"></span>
</div>
<div id="images"></div>
</section>
<script type="application/json" id="data">{{DATA}}</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const showSelect = document.getElementById("show");
showSelect.options[0].textContent =
  data.selection.startsWith("All") ? "every test image" : "runs disagree most";
document.getElementById("selection").textContent = data.selection + (data.sample && data.sample.length
  ? " Also: a random sample of " + data.sample.length + " other test images (photos linked from the dataset)."
  : "");
if (data.sample && data.sample.length) {
  const option = document.createElement("option");
  option.value = "sample"; option.textContent = "a random sample of the test set";
  showSelect.appendChild(option);
}
const groupSelect = document.getElementById("group");
for (const name of data.groups) {
  const option = document.createElement("option");
  option.value = name; option.textContent = name;
  groupSelect.appendChild(option);
}
const runFilters = document.getElementById("run-filters");
data.runs.forEach((label, index) => {
  const box = document.createElement("label");
  box.innerHTML = '<input type="checkbox" checked data-run="' + index + '"> ';
  box.appendChild(document.createTextNode(label));
  runFilters.appendChild(box);
});
function text(tag, content, className) {
  const element = document.createElement(tag);
  element.textContent = content;
  if (className) element.className = className;
  return element;
}
function mean(values) {
  const known = values.filter(v => v !== null);
  return known.length ? known.reduce((a, b) => a + b, 0) / known.length : 0;
}
function render() {
  const group = groupSelect.value;
  const boxes = [...runFilters.querySelectorAll("input")];
  const runs = boxes.filter(b => b.checked).map(b => Number(b.dataset.run));
  const sort = document.getElementById("sort").value;
  const source = showSelect.value === "sample" ? data.sample : data.images;
  let images = source.filter(image => !group || image.groups.includes(group));
  if (sort === "worst") images = [...images].sort((a, b) => mean(a.cider) - mean(b.cider));
  if (sort === "id") images = [...images].sort((a, b) => a.id.localeCompare(b.id));
  const list = document.getElementById("images");
  list.replaceChildren();
  for (const image of images) {
    const card = document.createElement("div");
    card.className = "card"; card.dataset.image = image.id;
    if (image.photo) {
      const photo = document.createElement("img");
      photo.className = "photo"; photo.src = image.photo; photo.alt = image.id; photo.loading = "lazy";
      card.appendChild(photo);
    }
    const body = document.createElement("div");
    body.appendChild(text("b", image.id));
    body.appendChild(text("span", "  " + image.groups.join(", "), "groups"));
    const table = document.createElement("table");
    const head = table.insertRow();
    for (const title of ["run", "caption", "CIDEr-D"]) head.appendChild(text("th", title));
    for (const run of runs) {
      if (image.captions[run] === null) continue;
      const row = table.insertRow();
      row.className = "caption"; row.dataset.run = run;
      row.appendChild(text("td", data.runs[run]));
      const caption = text("td", image.captions[run]);
      if (image.attention[run]) {
        const figure = document.createElement("img");
        figure.className = "attention"; figure.src = image.attention[run]; figure.loading = "lazy";
        caption.appendChild(figure);
      }
      row.appendChild(caption);
      row.appendChild(text("td", image.cider[run] === null ? "-" : image.cider[run].toFixed(3), "score"));
    }
    body.appendChild(table);
    const references = document.createElement("ul");
    for (const reference of image.references) references.appendChild(text("li", reference));
    body.appendChild(references);
    card.appendChild(body);
    list.appendChild(card);
  }
  document.getElementById("count").textContent = images.length + " of " + source.length + " images";
}
// The view lives in the address too (#group=animals&sort=id&runs=0,2): a link shows the same view.
function saveView() {
  const runs = [...runFilters.querySelectorAll("input")].filter(b => b.checked).map(b => b.dataset.run);
  const view = new URLSearchParams({group: groupSelect.value, sort: document.getElementById("sort").value,
                                    runs: runs.join(","), show: showSelect.value});
  history.replaceState(null, "", "#" + view.toString());
  render();
}
function loadView() {
  const view = new URLSearchParams(location.hash.slice(1));
  if (view.has("group")) groupSelect.value = view.get("group");
  if (view.has("sort")) document.getElementById("sort").value = view.get("sort");
  if (view.has("show") && [...showSelect.options].some(o => o.value === view.get("show")))
    showSelect.value = view.get("show");
  if (view.has("runs")) {
    const runs = view.get("runs").split(",");
    for (const box of runFilters.querySelectorAll("input")) box.checked = runs.includes(box.dataset.run);
  }
}
groupSelect.addEventListener("change", saveView);
showSelect.addEventListener("change", saveView);
document.getElementById("sort").addEventListener("change", saveView);
runFilters.addEventListener("change", saveView);
loadView();
render();
</script>
</body></html>
"""
