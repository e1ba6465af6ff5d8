"""Each dataset reader on a miniature copy of its real on-disk layout, quirks included."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from captioner.sources import load_records
from captioner.sources.checks import DatasetLayoutError
from captioner.sources.iapr import first_sentence
from captioner.train import run
from tests.conftest import REPO, compose_config

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (240, 210, 20)}
SHARED_FLICKR8K = REPO.parent / "shared" / "data" / "flickr8k-test"


def _image(path: Path, index: int) -> str:
    """Write a small JPEG of a coloured square; return its caption stem."""
    colour = list(COLOURS)[index % len(COLOURS)]
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (48, 40), (245, 245, 245))
    image.paste(COLOURS[colour], (8 + index % 3 * 8, 8, 28 + index % 3 * 8, 28))
    image.save(path, quality=90)
    return f"a {colour} square"


def _captions(stem: str) -> list[str]:
    return [f"{stem} on a white background", f"A {stem[2:]}.", f"{stem} in the picture",
            f"there is {stem}", f"{stem}, nothing else"]


def flickr8k_official(root: Path, n: int = 12) -> Path:
    images = root / "Flicker8k_Dataset"
    lines, names = [], [f"{1000 + i}_abcdef.jpg" for i in range(n)]
    for i, name in enumerate(names):
        stem = _image(images / name, i)
        lines += [f"{name}#{k}\t{c}" for k, c in enumerate(_captions(stem))]
    lines.append("2258277193_586949ec62.jpg.1#0\tA dog that never had a picture .")  # the real quirk
    lines += [f"9999_missing.jpg#{k}\ta caption of a missing image" for k in range(5)]
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (root / "Flickr_8k.trainImages.txt").write_text("\n".join(names[:8] + ["9999_missing.jpg"]) + "\n")
    (root / "Flickr_8k.devImages.txt").write_text("\n".join(names[8:10]) + "\n")
    (root / "Flickr_8k.testImages.txt").write_text("\n".join(names[10:]) + "\n")
    return root


def flickr8k_csv(root: Path, n: int = 12) -> Path:
    rows = ["image,caption"]
    for i in range(n):
        name = f"{2000 + i}_x.jpg"
        rows += [f'{name},"{c}"' for c in _captions(_image(root / "Images" / name, i))]
    (root / "captions.txt").write_text("\n".join(rows) + "\n")
    return root


def karpathy(root: Path, images: Path, name: str, n: int = 12, filepath: str | None = None) -> Path:
    splits = ["train"] * 6 + ["restval"] * 2 + ["val"] * 2 + ["test"] * 2
    entries = []
    for i in range(n):
        filename = f"{3000 + i}.jpg"
        stem = _image(images / (filepath or "") / filename, i)
        entry = {"filename": filename, "split": splits[i], "imgid": i,
                 "sentences": [{"raw": c, "tokens": c.split()} for c in _captions(stem)]}
        if filepath:
            entry["filepath"] = filepath
        entries.append(entry)
    (root / name).write_text(json.dumps({"images": entries, "dataset": name}))
    return root


def coco(root: Path, n_per_part: int = 7) -> Path:
    (root / "annotations").mkdir(parents=True)
    annotation_id = 0
    for part_index, part in enumerate(("train2014", "val2014")):
        images, annotations = [], []
        for i in range(n_per_part):
            image_id = part_index * 1000 + i
            file_name = f"COCO_{part}_{image_id:012d}.jpg"
            stem = _image(root / part / file_name, i + part_index)
            images.append({"id": image_id, "file_name": file_name, "width": 48, "height": 40})
            for caption in _captions(stem):
                annotations.append({"id": annotation_id, "image_id": image_id, "caption": caption})
                annotation_id += 1
        (root / "annotations" / f"captions_{part}.json").write_text(
            json.dumps({"images": images, "annotations": annotations}))
    return root


def iapr(root: Path, n: int = 12) -> Path:
    for i in range(n):
        folder = f"{i // 5:02d}"
        stem = _image(root / "images" / folder / f"{100 + i}.jpg", i)
        record = (f"<DOC>\n<DOCNO>annotations/{folder}/{100 + i}.eng</DOCNO>\n<TITLE>Caf\xe9 scene</TITLE>\n"
                  f"<DESCRIPTION>{stem} in front of a caf\xe9; a grey wall behind it;</DESCRIPTION>\n"
                  f"<NOTES></NOTES>\n<LOCATION>Quito, Ecuador</LOCATION>\n<DATE>April 2002</DATE>\n"
                  f"<IMAGE>images/{folder}/{100 + i}.jpg</IMAGE>\n"
                  f"<THUMBNAIL>thumbnails/{folder}/{100 + i}.jpg</THUMBNAIL>\n</DOC>\n")
        path = root / "annotations_complete_eng" / folder / f"{100 + i}.eng"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(record.encode("iso-8859-1"))
    return root


def _splits(records) -> dict[str, int]:
    return {s: sum(r.split == s for r in records) for s in ("train", "val", "test")}


def test_flickr8k_official_layout_skips_and_counts_missing_images(tmp_path, caplog):
    root = flickr8k_official(tmp_path / "flickr8k")
    with caplog.at_level(logging.WARNING):
        records = load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)
    assert len(records) == 12 and _splits(records) == {"train": 8, "val": 2, "test": 2}
    assert all(len(r.captions) == 5 and r.path.is_file() for r in records)
    assert records[0].image_id == "1000_abcdef"
    assert records[0].captions[0] == "a red square on a white background"
    assert "skipped 1 captioned images missing" in caplog.text  # 9999_missing.jpg
    assert "1 in no split file" in caplog.text  # 2258277193_586949ec62.jpg.1


def test_flickr8k_csv_and_karpathy_layouts(tmp_path):
    options = compose_config(dataset="flickr8k").dataset
    records = load_records("flickr8k", flickr8k_csv(tmp_path / "a"), options)
    assert len(records) == 12 and _splits(records) == {"train": 8, "val": 2, "test": 2}
    assert records[0].captions[1] == "A red square."  # quoted CSV field, comma-free
    root = tmp_path / "b"
    root.mkdir()
    karpathy(root, root / "Flicker8k_Dataset", "dataset_flickr8k.json")
    records = load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)
    assert _splits(records) == {"train": 8, "val": 2, "test": 2}  # restval joins train


@pytest.mark.skipif(not SHARED_FLICKR8K.is_dir(), reason="the shared Flickr8k test files are absent")
def test_flickr8k_reader_on_the_real_official_files(caplog):
    with caplog.at_level(logging.WARNING):
        records = load_records("flickr8k", SHARED_FLICKR8K, compose_config(dataset="flickr8k").dataset)
    # only the 1,000 test images ship here: the other 7,000 are skipped and counted
    assert len(records) == 1000 and {r.split for r in records} == {"test"}
    assert all(len(r.captions) == 5 for r in records)
    assert "skipped 7000 captioned images missing" in caplog.text
    assert "92 in no split file" in caplog.text  # including 2258277193_586949ec62.jpg.1


def test_coco_random_split_and_the_seed_reports_subset_rule(tmp_path):
    root = coco(tmp_path / "coco")
    options = compose_config(dataset="coco").dataset
    records = load_records("coco", root, options)
    assert len(records) == 14 and sum(len(r.captions) for r in records) == 70
    assert {r.path.parent.name for r in records} == {"train2014", "val2014"}
    options.max_captions = 30
    first = load_records("coco", root, options)
    again = load_records("coco", root, options)
    assert sum(len(r.captions) for r in first) == 30
    assert [(r.image_id, r.captions, r.split) for r in first] == \
        [(r.image_id, r.captions, r.split) for r in again]
    options.seed = 1
    other = load_records("coco", root, options)
    assert [r.captions for r in other] != [r.captions for r in first]
    options.max_images, options.max_captions = 5, None
    assert len(load_records("coco", root, options)) == 5


def test_coco_karpathy_split(tmp_path):
    root = tmp_path / "coco"
    root.mkdir()
    karpathy(root, root, "dataset_coco.json", filepath="val2014")
    options = compose_config(dataset="coco").dataset
    options.split = "karpathy"
    records = load_records("coco", root, options)
    assert _splits(records) == {"train": 8, "val": 2, "test": 2}
    assert all(r.path.parent.name == "val2014" for r in records)


def test_iapr_reads_iso_8859_1_records_and_takes_the_first_sentence(tmp_path):
    root = iapr(tmp_path / "iaprtc12")
    options = compose_config(dataset="iapr").dataset
    records = load_records("iapr", root, options)
    assert len(records) == 12 and all(len(r.captions) == 1 for r in records)
    assert records[0].captions == ["a red square in front of a caf\xe9"]
    options.caption = "description"
    assert load_records("iapr", root, options)[0].captions == [
        "a red square in front of a caf\xe9; a grey wall behind it;"]
    assert first_sentence("a man. with a dog; and more") == "a man"


@pytest.mark.parametrize("dataset, message", [
    ("flickr8k", "flickr8k: data directory"), ("coco", "coco: data directory"),
    ("iapr", "iapr: data directory"), ("flickr30k", "flickr30k: data directory")])
def test_a_missing_data_directory_says_where_to_get_the_data(tmp_path, dataset, message):
    with pytest.raises(DatasetLayoutError, match=message) as error:
        load_records(dataset, tmp_path / "nowhere", compose_config(dataset=dataset).dataset)
    assert "dataset.root=" in str(error.value)


def test_a_folder_without_the_expected_files_is_named(tmp_path):
    with pytest.raises(DatasetLayoutError, match="holds none of Flickr8k.token.txt"):
        load_records("flickr8k", tmp_path, compose_config(dataset="flickr8k").dataset)


LAYOUTS = {
    "flickr8k": lambda root: flickr8k_official(root),
    "flickr30k": lambda root: karpathy(root, root / "flickr30k-images", "dataset_flickr30k.json"),
    "coco": lambda root: coco(root),
    "iapr": lambda root: iapr(root),
}


@pytest.mark.parametrize("dataset", sorted(LAYOUTS))
def test_parse_extract_train_and_score_each_dataset(tmp_path, dataset):
    root = tmp_path / dataset
    root.mkdir()
    LAYOUTS[dataset](root)
    cfg = compose_config(f"dataset.root={root}", dataset=dataset, data_root=tmp_path / "data")
    summary = run(cfg, tmp_path / "run")
    assert summary["status"] == "completed"
    assert set(summary["test"]) >= {"bleu4", "cider", "meteor", "rouge_l"}
    captions = json.loads((tmp_path / "run" / "captions.json").read_text())
    assert captions and all(c["references"] for c in captions)
    assert (tmp_path / "data" / "features" / f"{dataset}-vgg16.h5").is_file()
