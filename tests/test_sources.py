"""Each dataset reader on a miniature copy of its real on-disk layout, quirks included."""

from __future__ import annotations

import codecs
import json
import logging
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from captioner.errors import ConfigError
from captioner.features.cache import default_path
from captioner.runs.run import run
from captioner.sources import load_records
from captioner.sources.checks import DatasetFormatError, DatasetLayoutError
from captioner.sources.flickr8k import OFFICIAL_SPLIT_FILES
from captioner.sources.iapr import first_sentence
from tests.conftest import REPO, compose_config, settings_of

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


def coco(root: Path, n_per_part: int = 7, year: str = "2014") -> Path:
    """The release's layout: 2014 names files COCO_<part>_<id>.jpg, 2017 names them <id>.jpg."""
    (root / "annotations").mkdir(parents=True)
    annotation_id = 0
    for part_index, part in enumerate((f"train{year}", f"val{year}")):
        images, annotations = [], []
        for i in range(n_per_part):
            image_id = part_index * 1000 + i
            file_name = f"COCO_{part}_{image_id:012d}.jpg" if year == "2014" else f"{image_id:012d}.jpg"
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
    assert "skipped 1 captioned images listed in no split file" in caplog.text  # 2258277193_586949ec62.jpg.1


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


def test_flickr8k_files_that_would_mix_splits_or_cut_captions_are_named(tmp_path):
    """An image in two split files would leak its captions into the other split; a caption with an
    unquoted comma was cut at the comma, silently."""
    options = compose_config(dataset="flickr8k").dataset
    root = flickr8k_official(tmp_path / "official")
    dev = root / "Flickr_8k.devImages.txt"
    dev.write_text(dev.read_text() + "1000_abcdef.jpg\n")  # a train image
    with pytest.raises(DatasetFormatError, match=r"Flickr_8k.devImages.txt: 1000_abcdef.jpg is also in the "
                                                 r"train split \(Flickr_8k.trainImages.txt\)"):
        load_records("flickr8k", root, options)
    root = flickr8k_csv(tmp_path / "csv")
    table = root / "captions.txt"
    table.write_text(table.read_text() + "2000_x.jpg,A dog , running .\n")
    with pytest.raises(DatasetFormatError, match=r"captions.txt:62: more fields than the header"):
        load_records("flickr8k", root, options)


def test_coco_max_captions_with_the_karpathy_split_is_refused_not_ignored(tmp_path):
    root = tmp_path / "coco"
    root.mkdir()
    karpathy(root, root, "dataset_coco.json", filepath="val2014")
    options = compose_config(dataset="coco").dataset
    options.split, options.max_captions = "karpathy", 30
    with pytest.raises(ValueError, match="dataset.max_captions applies to dataset.split=random"):
        load_records("coco", root, options)


@pytest.mark.skipif(not SHARED_FLICKR8K.is_dir(), reason="the shared Flickr8k test files are absent")
def test_flickr8k_reader_on_the_real_official_files(caplog):
    with caplog.at_level(logging.WARNING):
        records = load_records("flickr8k", SHARED_FLICKR8K, compose_config(dataset="flickr8k").dataset)
    # only the 1,000 test images ship here: the other 7,000 are skipped and counted
    assert len(records) == 1000 and {r.split for r in records} == {"test"}
    assert all(len(r.captions) == 5 for r in records)
    assert "skipped 7000 captioned images missing" in caplog.text
    assert "skipped 92 captioned images listed in no split file" in caplog.text  # incl. ...jpg.1


def test_coco_random_split_and_the_prior_studys_subset_rule(tmp_path):
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


def test_coco_2017_layout_is_detected_and_split_at_random_like_2014(tmp_path):
    root = coco(tmp_path / "coco", year="2017")
    options = compose_config(dataset="coco").dataset
    records = load_records("coco", root, options)
    assert len(records) == 14 and sum(len(r.captions) for r in records) == 70
    assert {r.path.parent.name for r in records} == {"train2017", "val2017"}
    assert {r.image_id for r in records} >= {"000000000000", "000000001006"}
    assert _splits(records) == _splits(load_records("coco", coco(tmp_path / "coco2014"), options))
    options.max_captions = 30
    assert sum(len(r.captions) for r in load_records("coco", root, options)) == 30


def karpathy_coco_2014_names(root: Path, splits: dict[int, str]) -> Path:
    """Karpathy's dataset_coco.json as it ships: 2014 file names and folders, the COCO id in `cocoid`."""
    entries = [{"filepath": "val2014", "filename": f"COCO_val2014_{cocoid:012d}.jpg", "cocoid": cocoid,
                "imgid": index, "split": split, "sentences": [{"raw": "a caption Karpathy's file holds"}]}
               for index, (cocoid, split) in enumerate(splits.items())]
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries, "dataset": "coco"}))
    return root / "dataset_coco.json"


def test_coco_karpathy_split_on_the_2017_layout_matches_images_by_coco_id(tmp_path, caplog):
    root = coco(tmp_path / "coco", year="2017")
    # ids 0-6 are in train2017, 1000-1006 in val2017; his file says val2014 for all of them
    splits = {0: "train", 1: "restval", 2: "val", 1000: "test", 1001: "val", 1002: "train", 4242: "test"}
    karpathy_coco_2014_names(root, splits)
    options = compose_config(dataset="coco").dataset
    options.split = "karpathy"
    with caplog.at_level(logging.WARNING):
        records = load_records("coco", root, options)
    by_id = {r.image_id: r for r in records}
    assert {int(i): r.split for i, r in by_id.items()} == {0: "train", 1: "train", 2: "val", 1000: "test",
                                                          1001: "val", 1002: "train"}
    assert by_id["000000001000"].path == root / "val2017" / "000000001000.jpg"
    assert by_id["000000000002"].path == root / "train2017" / "000000000002.jpg"
    assert len(by_id["000000000000"].captions) == 5  # the 2017 annotations' captions
    assert "skipped 1 entries" in caplog.text  # 4242: in his file, not in the 2017 release
    _edit_json(root / "dataset_coco.json", lambda c: c["images"][3].pop("cocoid"))
    with pytest.raises(DatasetFormatError, match=r"dataset_coco\.json: image entry 3 has no field 'cocoid'"):
        load_records("coco", root, options)


def test_a_coco_root_without_either_layout_names_both_and_the_downloads(tmp_path):
    (tmp_path / "coco").mkdir()
    with pytest.raises(DatasetLayoutError) as error:
        load_records("coco", tmp_path / "coco", compose_config(dataset="coco").dataset)
    message = str(error.value)
    assert str(tmp_path / "coco" / "annotations" / "captions_train2014.json") in message
    assert "annotations/captions_{train,val}2017.json, train2017/, val2017/" in message
    assert "annotations_trainval2014.zip" in message and "annotations_trainval2017.zip" in message


def test_coco_dataset_year_chooses_for_a_root_that_holds_both_releases(tmp_path):
    root = coco(tmp_path / "coco", year="2014")
    shutil.copytree(coco(tmp_path / "coco2017", year="2017"), root, dirs_exist_ok=True)
    options = compose_config(dataset="coco").dataset
    assert {r.path.parent.name for r in load_records("coco", root, options)} == {"train2014", "val2014"}
    options = compose_config("+dataset.year=2017", dataset="coco").dataset  # as on the command line
    assert {r.path.parent.name for r in load_records("coco", root, options)} == {"train2017", "val2017"}
    options = OmegaConf.to_container(options)
    options["year"] = 2017
    assert {r.path.parent.name for r in load_records("coco", root, options)} == {"train2017", "val2017"}
    options["year"] = 2015
    with pytest.raises(ConfigError, match="dataset.year=2015: expected auto, 2014 or 2017"):
        load_records("coco", root, options)


def test_a_missing_flickr30k_split_file_says_it_comes_from_karpathys_zip(tmp_path):
    root = tmp_path / "flickr30k"
    _image(root / "flickr30k-images" / "1000.jpg", 0)  # the images' archive unpacked, nothing else
    with pytest.raises(DatasetLayoutError) as error:
        load_records("flickr30k", root, compose_config(dataset="flickr30k").dataset)
    message = str(error.value)
    assert str(root / "dataset_flickr30k.json") in message
    assert "caption_datasets.zip" in message and "flickr30k.tar.gz" in message


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
    assert summary.status == "completed"
    assert set(summary.test) >= {"bleu4", "cider", "meteor", "rouge_l"}
    captions = json.loads((tmp_path / "run" / "captions.json").read_text())
    assert captions and all(c["references"] for c in captions)
    assert Path(summary.features) == default_path(tmp_path / "data", dataset, settings_of(cfg).cnn)
    assert Path(summary.features).is_file() and Path(summary.features).name.startswith(f"{dataset}-vgg16-")


# Hostile and broken input: files as they circulate, not as they ship.

def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_a_windows_or_latin_1_token_file_is_read_with_one_warning(tmp_path, caplog, encoding):
    root = flickr8k_official(tmp_path / "flickr8k")
    token_file = root / "Flickr8k.token.txt"
    text = token_file.read_text().replace("a red square on a white background",
                                          "a red square in a caf\xe9, na\xefve and \xbd done")
    token_file.write_bytes(text.encode(encoding))
    with caplog.at_level(logging.WARNING):
        records = load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)
    assert records[0].captions[0] == "a red square in a caf\xe9, na\xefve and \xbd done"
    fallbacks = [m for m in _warnings(caplog) if "is not UTF-8" in m]
    assert len(fallbacks) == 1 and str(token_file) in fallbacks[0] and "read it as cp1252" in fallbacks[0]


def test_a_cp1252_kaggle_captions_file_is_read_with_one_warning(tmp_path, caplog):
    root = flickr8k_csv(tmp_path / "kaggle")
    table = root / "captions.txt"
    text = table.read_text().replace('"a red square on a white background"',
                                     '"a red square \u2014 on a white background \u2019"')
    table.write_bytes(text.encode("cp1252"))  # the dash and quote are cp1252-only bytes 0x97, 0x92
    with caplog.at_level(logging.WARNING):
        records = load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)
    first = next(r for r in records if r.image_id == "2000_x")
    assert first.captions[0] == "a red square \u2014 on a white background \u2019"
    fallbacks = [m for m in _warnings(caplog) if "is not UTF-8" in m]
    assert len(fallbacks) == 1 and str(table) in fallbacks[0] and "cp1252" in fallbacks[0]


def test_a_bom_and_crlf_token_file_keeps_every_caption(tmp_path):
    root = flickr8k_official(tmp_path / "flickr8k")
    for name in ("Flickr8k.token.txt", "Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt",
                 "Flickr_8k.testImages.txt"):
        file = root / name
        file.write_bytes(("\ufeff" + file.read_text().replace("\n", "\r\n")).encode("utf-8"))
    records = load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)
    assert len(records) == 12 and all(len(r.captions) == 5 for r in records)
    assert records[0].image_id == "1000_abcdef"
    assert records[0].captions[0] == "a red square on a white background"
    assert all(not c.endswith("\r") for r in records for c in r.captions)
    # The Kaggle copy with a BOM before its header, re-saved with CRLF line ends.
    kaggle = flickr8k_csv(tmp_path / "kaggle")
    table = kaggle / "captions.txt"
    table.write_bytes(("\ufeff" + table.read_text().replace("\n", "\r\n")).encode("utf-8"))
    records = load_records("flickr8k", kaggle, compose_config(dataset="flickr8k").dataset)
    assert len(records) == 12 and all(len(r.captions) == 5 for r in records)


def _edit_json(path: Path, change) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def test_a_coco_caption_that_is_null_names_the_file_entry_and_field(tmp_path):
    root = coco(tmp_path / "coco")
    file = root / "annotations" / "captions_val2014.json"
    _edit_json(file, lambda c: c["annotations"][3].update(caption=None))
    with pytest.raises(ValueError) as error:
        load_records("coco", root, compose_config(dataset="coco").dataset)
    message = str(error.value)
    assert str(file) in message and "annotations[3]" in message and "'caption'" in message
    assert "image_id 1000" in message  # the fourth annotation belongs to the first val image
    _edit_json(file, lambda c: c["annotations"][3].update(caption="ok") or c["images"][1].pop("file_name"))
    with pytest.raises(ValueError, match=r"captions_val2014\.json: images\[1\] \(id 1001\) has no field "
                                         r"'file_name'"):
        load_records("coco", root, compose_config(dataset="coco").dataset)


@pytest.mark.parametrize("field", ["sentences", "filename", "split"])
def test_a_karpathy_entry_without_a_field_names_the_file_entry_and_field(tmp_path, field):
    root = tmp_path / "flickr30k"
    root.mkdir()
    karpathy(root, root / "flickr30k-images", "dataset_flickr30k.json")
    file = root / "dataset_flickr30k.json"
    _edit_json(file, lambda c: c["images"][2].pop(field))
    with pytest.raises(ValueError) as error:
        load_records("flickr30k", root, compose_config(dataset="flickr30k").dataset)
    message = str(error.value)
    assert str(file) in message and "image entry 2 (imgid 2" in message and f"no field '{field}'" in message


def _blank_some_captions(dataset: str, root: Path) -> None:
    """Image 0: every caption empty or punctuation; image 1: one of five is '...'."""
    blanks = ["", "  ", ".", " ... ", "-- !"]
    if dataset == "flickr8k":
        lines = (root / "Flickr8k.token.txt").read_text().splitlines()
        for k in range(5):
            lines[k] = lines[k].split("\t")[0] + "\t" + blanks[k]
        lines[5] = lines[5].split("\t")[0] + "\t..."
        (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    elif dataset == "flickr30k":
        def change(content):
            for k, sentence in enumerate(content["images"][0]["sentences"]):
                sentence["raw"] = blanks[k]
            content["images"][1]["sentences"][0]["raw"] = "..."
        _edit_json(root / "dataset_flickr30k.json", change)
    elif dataset == "coco":
        def change(content):
            for k in range(5):
                content["annotations"][k]["caption"] = blanks[k]
            content["annotations"][5]["caption"] = "..."
        _edit_json(root / "annotations" / "captions_train2014.json", change)
    else:  # iapr: one description per image
        for index, text in ((0, " ; . "), (1, "...")):
            file = root / "annotations_complete_eng" / "00" / f"{100 + index}.eng"
            record = file.read_bytes().decode("iso-8859-1")
            start, end = record.index("<DESCRIPTION>") + 13, record.index("</DESCRIPTION>")
            file.write_bytes((record[:start] + text + record[end:]).encode("iso-8859-1"))


@pytest.mark.parametrize("dataset", sorted(LAYOUTS))
def test_empty_and_punctuation_only_captions_are_dropped_counted_and_reported(tmp_path, caplog, dataset):
    root = tmp_path / dataset
    root.mkdir()
    LAYOUTS[dataset](root)
    options = compose_config(dataset=dataset).dataset
    before = load_records(dataset, root, options)
    _blank_some_captions(dataset, root)
    with caplog.at_level(logging.WARNING):
        after = load_records(dataset, root, options)
    assert all(any(ch.isalnum() for ch in c) for r in after for c in r.captions)
    lost = {r.image_id for r in before} - {r.image_id for r in after}
    dropped = [m for m in _warnings(caplog) if "empty or punctuation-only" in m]
    assert len(dropped) == 1
    if dataset == "iapr":  # one caption per image: both images go
        assert len(lost) == 2 and "dropped 2 empty or punctuation-only captions" in dropped[0]
        assert "2 images left with no caption" in dropped[0]
    else:
        assert len(lost) == 1 and "dropped 6 empty or punctuation-only captions" in dropped[0]
        assert "1 images left with no caption" in dropped[0]
        assert sorted(len(r.captions) for r in after)[:2] == [4, 5]


def test_the_flickr8k_reader_warns_about_skipped_images_only_when_some_were_skipped(tmp_path, caplog):
    root = flickr8k_official(tmp_path / "flickr8k")
    token_file = root / "Flickr8k.token.txt"
    token_file.write_text("".join(line + "\n" for line in token_file.read_text().splitlines()
                                  if "9999_missing" not in line))  # every listed image is on disk
    with caplog.at_level(logging.WARNING):
        records = load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)
    assert len(records) == 12
    assert not any("missing from" in m for m in _warnings(caplog)), _warnings(caplog)
    assert any("skipped 1 captioned images listed in no split file" in m for m in _warnings(caplog))


def test_official_text_files_without_the_image_folder_say_which_folder_and_the_fix(tmp_path):
    root = flickr8k_official(tmp_path / "flickr8k")
    for image in (root / "Flicker8k_Dataset").iterdir():
        image.unlink()
    (root / "Flicker8k_Dataset").rmdir()  # only Flickr8k_text.zip was unpacked
    with pytest.raises(DatasetLayoutError) as error:
        load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)
    message = str(error.value)
    assert f"image folder {root / 'Flicker8k_Dataset'} does not exist" in message
    assert "dataset.images_dir=<folder>" in message


def test_a_bom_token_file_with_one_cp1252_byte_loses_its_bom_and_names_the_byte_offset(tmp_path, caplog):
    """A UTF-8 file with a byte-order mark and one Windows byte falls back to cp1252: the mark must not
    stay glued to the first image name, and the offset must count the mark's three bytes."""
    root = flickr8k_official(tmp_path / "flickr8k")
    token_file = root / "Flickr8k.token.txt"
    text = token_file.read_text().replace("a red square on a white background", "a red square in a caf\xe9")
    data = codecs.BOM_UTF8 + text.encode("cp1252")
    token_file.write_bytes(data)
    with caplog.at_level(logging.WARNING):
        records = load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)
    assert records[0].image_id == "1000_abcdef" and records[0].captions[0] == "a red square in a caf\xe9"
    offset = data.index(b"\xe9")  # in the file's bytes, the mark's three included
    fallbacks = [m for m in _warnings(caplog) if "is not UTF-8" in m]
    assert len(fallbacks) == 1 and f"byte 0xe9 at offset {offset})" in fallbacks[0]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_utf_16_token_file_is_decoded(tmp_path, encoding):
    """Notepad's "Unicode": UTF-16 with a byte-order mark and CRLF line ends."""
    root = flickr8k_official(tmp_path / "flickr8k")
    token_file = root / "Flickr8k.token.txt"
    text = token_file.read_text().replace("a red square on a white background", "a red square in a caf\xe9")
    token_file.write_bytes(("\ufeff" + text.replace("\n", "\r\n")).encode(encoding))
    records = load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)
    assert len(records) == 12 and all(len(r.captions) == 5 for r in records)
    assert records[0].captions[0] == "a red square in a caf\xe9"


def test_a_truncated_utf_16_token_file_is_refused_as_utf_16(tmp_path):
    root = flickr8k_official(tmp_path / "flickr8k")
    token_file = root / "Flickr8k.token.txt"
    token_file.write_bytes(codecs.BOM_UTF16_LE + token_file.read_text().encode("utf-16-le")[:-1])
    with pytest.raises(DatasetFormatError, match="UTF-16") as error:
        load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)
    assert str(token_file) in str(error.value)


def test_an_iapr_copy_saved_as_utf_8_keeps_its_accents_and_iso_8859_1_reads_quietly(tmp_path, caplog):
    root = iapr(tmp_path / "iaprtc12")
    files = sorted((root / "annotations_complete_eng").glob("*/*.eng"))
    for file in files[::2]:  # the others stay ISO-8859-1, as the official release ships them
        file.write_bytes(file.read_bytes().decode("iso-8859-1").encode("utf-8"))
    with caplog.at_level(logging.WARNING):
        records = load_records("iapr", root, compose_config(dataset="iapr").dataset)
    assert len(records) == 12
    assert all(r.captions == [f"{_image_caption(r.image_id)} in front of a caf\xe9"] for r in records)
    assert not _warnings(caplog)


def _image_caption(stem: str) -> str:
    """The caption stem `iapr()` gave the image `stem` (100 + its index)."""
    return f"a {list(COLOURS)[(int(stem) - 100) % len(COLOURS)]} square"


@pytest.mark.parametrize("description, sentence", [
    ("a caf\xe9 in front of St. Peter's church; a grey sky", "a caf\xe9 in front of St. Peter's church"),
    ("a man approx. 30 years old; a dog", "a man approx. 30 years old"),
    ("a view of Mt. Cotopaxi. a lake in front of it", "a view of Mt. Cotopaxi"),
    ("fruit, e.g. bananas and mangos, on a table; a woman", "fruit, e.g. bananas and mangos, on a table"),
])
def test_an_iapr_abbreviation_does_not_end_the_first_sentence(description, sentence):
    assert first_sentence(description) == sentence


def test_a_flickr8k_token_file_concatenated_twice_names_the_repeated_key(tmp_path):
    """Every image would silently get its five captions twice."""
    root = flickr8k_official(tmp_path / "flickr8k")
    token_file = root / "Flickr8k.token.txt"
    text = token_file.read_text()
    token_file.write_text(text + text)
    with pytest.raises(DatasetFormatError) as error:
        load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)
    message = str(error.value)
    second_copy = text.count("\n") + 1  # the line the repeat starts on
    assert f"{token_file}:{second_copy}:" in message
    assert "1000_abcdef.jpg#0" in message and "line 1" in message


@pytest.mark.parametrize("separator", ["\u2028", "\x85", "\x0c", "\x1e"])
def test_a_flickr8k_caption_holding_a_unicode_line_separator_stays_one_line(tmp_path, separator):
    """`str.splitlines` cuts at these too: the caption was cut in two and every later line number drifted."""
    root = flickr8k_official(tmp_path / "flickr8k")
    token_file = root / "Flickr8k.token.txt"
    text = token_file.read_text().replace("a red square on a white background",
                                          f"a red square{separator}on a white background")
    token_file.write_text(text)
    records = load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)
    assert records[0].captions[0] == f"a red square{separator}on a white background"
    token_file.write_text(text + "a line without a tab\n")
    last_line = text.count("\n") + 1
    with pytest.raises(DatasetFormatError, match=rf":{last_line}: expected 'name.jpg#k<TAB>caption'"):
        load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)


def test_split_files_that_name_no_captioned_image_are_blamed_not_the_image_folder(tmp_path):
    """Split files listing 'Flicker8k_Dataset/x.jpg' left every image unsplit; the error said the
    images were not in their folder, where they are."""
    root = flickr8k_official(tmp_path / "flickr8k")
    for name in OFFICIAL_SPLIT_FILES.values():
        file = root / name
        file.write_text("".join(f"Flicker8k_Dataset/{image}\n" for image in file.read_text().split()))
    with pytest.raises(DatasetFormatError) as error:
        load_records("flickr8k", root, compose_config(dataset="flickr8k").dataset)
    message = str(error.value)
    assert all(name in message for name in OFFICIAL_SPLIT_FILES.values())
    assert "no captioned image" in message and "'Flicker8k_Dataset/1000_abcdef.jpg'" in message
