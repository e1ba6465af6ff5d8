import hashlib
import random
from collections import Counter

import pytest
from PIL import Image

from captioner.errors import ConfigError
from captioner.sources import load_records
from captioner.sources.shapes import (
    COLOURS,
    SHAPES,
    SIZES,
    TEMPLATE_WEIGHTS,
    describe,
    generate,
    generation_params,
    random_scene,
)
from tests.conftest import compose_config


def test_generation_is_deterministic_and_writes_real_images(tmp_path):
    cfg = compose_config("dataset.num_images=30", data_root=tmp_path / "a")
    first = load_records("shapes", tmp_path / "a" / "shapes", cfg.dataset)
    second = load_records("shapes", tmp_path / "b" / "shapes", cfg.dataset)
    assert [(r.image_id, r.captions, r.split) for r in first] == \
        [(r.image_id, r.captions, r.split) for r in second]
    assert (tmp_path / "a" / "shapes" / "images" / "shapes_000000.jpg").read_bytes() == \
        (tmp_path / "b" / "shapes" / "images" / "shapes_000000.jpg").read_bytes()
    with Image.open(first[0].path) as image:
        assert image.format == "JPEG" and image.size == (64, 64)
    # no staging folders left behind (the lock file that serialises generation stays, empty)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [".shapes.lock", "shapes"]


def test_each_image_has_five_different_captions_naming_its_shapes(tmp_path):
    cfg = compose_config("dataset.num_images=200", data_root=tmp_path)
    records = load_records("shapes", tmp_path / "shapes", cfg.dataset)
    for record in records:
        assert len(set(record.captions)) == 5
        for caption in record.captions:
            words = caption.replace(",", "").replace(":", "").split()
            colours = sum(w in COLOURS for w in words)
            # every caption states every shape's colour, kind and size
            assert colours >= 1
            assert colours == sum(w in SHAPES for w in words) == sum(w in SIZES for w in words)
    splits = [r.split for r in records]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (160, 20, 20)


def test_common_phrasings_are_drawn_more_often_than_rare_ones():
    rng, scenes = random.Random(0), {}
    while len(scenes) < 3:  # one scene of each size
        scene = random_scene(rng, 3)
        scenes.setdefault(len(scene), scene)
    for scene in scenes.values():
        drawn = Counter()
        for _ in range(2000):
            drawn.update(describe(scene, rng, 5))
        counts = [count for _, count in sorted(drawn.items(), key=lambda item: -item[1])]
        assert len(counts) == len(TEMPLATE_WEIGHTS)
        assert counts[0] > 0.95 * 2000 and counts[-1] < 0.6 * 2000


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_changed_parameters_are_generated_beside_the_first_never_over_it(tmp_path):
    """A run that read settings P1's records keeps P1's images while a run with P2 (a sweep over
    dataset.seed or num_images sharing data_root) generates its own: the folder is never swapped."""
    root = tmp_path / "shapes"
    first = load_records("shapes", root, compose_config("dataset.num_images=10").dataset)
    images = {r.path: _digest(r.path) for r in first}
    manifest = (root / "captions.json").read_bytes()
    other = load_records("shapes", root, compose_config("dataset.num_images=14", "dataset.seed=1").dataset)
    assert {r.path: _digest(r.path) for r in first} == images  # P1's scenes, not P2's
    assert (root / "captions.json").read_bytes() == manifest
    assert len(other) == 14 and _digest(other[0].path) != images[first[0].path]
    # each settings' folder is reused as it is, whichever asks first
    again = load_records("shapes", root, compose_config("dataset.num_images=10").dataset)
    assert [r.path for r in again] == [r.path for r in first]
    assert [r.path for r in load_records("shapes", root, compose_config("dataset.num_images=14",
                                                                         "dataset.seed=1").dataset)] == \
        [r.path for r in other]


def test_a_complete_dataset_folder_is_never_regenerated_in_place(tmp_path):
    root = tmp_path / "shapes"
    load_records("shapes", root, compose_config("dataset.num_images=5").dataset)
    manifest = (root / "captions.json").read_bytes()
    params = generation_params(compose_config("dataset.num_images=7").dataset)
    with pytest.raises(FileExistsError, match=f"{root} already holds a generated shapes dataset"):
        generate(root, params)
    assert (root / "captions.json").read_bytes() == manifest


def test_a_folder_that_is_not_a_shapes_dataset_is_never_replaced(tmp_path):
    root = tmp_path / "shapes"
    root.mkdir()
    (root / "precious.txt").write_text("someone's data")
    with pytest.raises(FileExistsError, match=f"{root} exists and is not a generated shapes dataset"):
        load_records("shapes", root, compose_config("dataset.num_images=5").dataset)
    assert (root / "precious.txt").read_text() == "someone's data"


def test_a_corrupt_manifest_names_the_file(tmp_path):
    root = tmp_path / "shapes"
    load_records("shapes", root, compose_config("dataset.num_images=5").dataset)
    (root / "captions.json").write_text("{not json")
    with pytest.raises(ValueError, match=f"{root / 'captions.json'}: not a valid shapes manifest"):
        load_records("shapes", root, compose_config("dataset.num_images=5").dataset)


@pytest.mark.parametrize("option, message", [
    ("dataset.num_images=abc", "dataset.num_images='abc': expected a whole number >= 1"),
    ("dataset.num_images=-5", "dataset.num_images=-5: expected a whole number >= 1"),
    ("dataset.image_size=4", "dataset.image_size=4: expected a whole number >= 16")])
def test_generator_options_it_cannot_use_are_named_before_anything_is_written(tmp_path, option, message):
    # were a raw ValueError, or (-5) an empty dataset and advice to unpack one
    cfg = compose_config(option, data_root=tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_records("shapes", tmp_path / "shapes", cfg.dataset)
    assert not (tmp_path / "shapes").exists()
