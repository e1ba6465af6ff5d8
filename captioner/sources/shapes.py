"""The built-in dataset: generated scenes of coloured shapes with human-like captions.

It exists so that every command works offline and so that tests exercise learning: captions
name the colour, shape, size and relative position of 1-3 shapes, which the image carries.
The first request writes real JPEG files and a `captions.json` manifest into the dataset root
(deterministic from the seed); after that this is a source like any other.

Each set of generator settings (`num_images`, `image_size`, `seed`, ...) has its own folder: the
dataset root holds the first set generated there, any other set goes beside it into
`<root>-<key>`, `key` a hash of the settings. A complete folder is never replaced, so runs that
share a data root with other settings (a sweep over `dataset.num_images`, `train.py` beside a
smoke config) never read each other's images.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock
from PIL import Image, ImageDraw

from captioner.errors import ConfigError
from captioner.sources.checks import DatasetFormatError, DatasetRootTakenError
from captioner.sources.record import ImageRecord
from captioner.sources.splits import random_splits

MANIFEST = "captions.json"
FORMAT_VERSION = 3  # 3: every caption names every fact; common phrasings more often

COLOURS = {
    "red": (214, 40, 40),
    "green": (46, 160, 67),
    "blue": (40, 90, 220),
    "yellow": (240, 200, 30),
    "purple": (130, 60, 180),
    "orange": (245, 130, 30),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.085, "large": 0.16}  # radius as a fraction of the image side
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")


@dataclass(frozen=True)
class Shape:
    colour: str
    kind: str
    size: str
    row: int
    column: int
    x: float  # centre, in fractions of the image side
    y: float


def load_records(root: Path, options: Mapping[str, Any]) -> list[ImageRecord]:
    """Records of the shapes dataset for `options` under `root`, generating it first if needed."""
    folder = generated_folder(Path(root), generation_params(options))
    manifest = _read_manifest(folder / MANIFEST)
    return [
        ImageRecord(image_id=Path(item["file"]).stem, path=folder / item["file"], captions=item["captions"],
                    split=item["split"])
        for item in manifest["images"]
    ]


def generated_folder(root: Path, params: dict[str, Any]) -> Path:
    """The folder holding the scenes of `params`: `root` or `<root>-<key>`, generated if neither does."""
    folder = _folder_holding(root, params)
    if folder is not None:  # complete folders are never replaced: no lock needed to read one
        return folder
    _make_parent(root)
    # Runs of a sweep started together: the first generates, the others wait and reuse it. One lock
    # per root, so that two settings never both claim the root itself.
    with FileLock(root.parent / f".{root.name}.lock"):
        folder = _folder_holding(root, params)
        if folder is None:
            folder = root if not (root / MANIFEST).exists() else settings_folder(root, params)
            generate(folder, params)
    return folder


def settings_folder(root: Path, params: dict[str, Any]) -> Path:
    """`<root>-<key>`: where `params` are generated when `root` holds other settings."""
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return root.parent / f"{root.name}-{key}"


def _folder_holding(root: Path, params: dict[str, Any]) -> Path | None:
    for folder in (root, settings_folder(root, params)):
        if _is_generated(folder / MANIFEST, params):
            return folder
    return None


def _is_generated(manifest_path: Path, params: dict[str, Any]) -> bool:
    return manifest_path.exists() and _read_manifest(manifest_path)["generator"] == params


def _make_parent(root: Path) -> None:
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the data directory {root.parent}: {error}; "
                      "set data_root=<a writable folder>") from error


# The generator's whole-number options, their defaults and their least sensible values.
WHOLE_NUMBER_OPTIONS = {"num_images": (2000, 1), "image_size": (128, 16), "captions_per_image": (5, 1),
                        "max_shapes": (3, 1)}


def generation_params(options: Mapping[str, Any]) -> dict[str, Any]:
    """The generator's settings from `dataset.*`; a value it cannot use is a ConfigError naming it."""
    splits = dict(options.get("split_fractions", {"train": 0.8, "val": 0.1, "test": 0.1}))
    params: dict[str, Any] = {"version": FORMAT_VERSION}
    problems = []
    for name, (default, least) in WHOLE_NUMBER_OPTIONS.items():
        value = options.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            problems.append(f"dataset.{name}={value!r}: expected a whole number >= {least}")
        params[name] = value
    seed = options.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        problems.append(f"dataset.seed={seed!r}: expected a whole number")
    if isinstance(params["captions_per_image"], int) and params["captions_per_image"] > CAPTION_TEMPLATES:
        problems.append(f"dataset.captions_per_image={params['captions_per_image']}: the generator has "
                        f"{CAPTION_TEMPLATES} caption templates")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in splits.values()):
        problems.append(f"dataset.split_fractions={splits}: expected numbers >= 0")
    if problems:
        raise ConfigError("; ".join(problems))
    return {**params, "seed": seed, "split_fractions": {k: float(v) for k, v in splits.items()}}


def generate(root: Path, params: dict[str, Any]) -> None:
    """Write the dataset into `root`, which must be absent or empty, atomically: a crash leaves
    nothing. A folder that holds files is never replaced: a run may be reading its images."""
    root = Path(root)
    if (root / MANIFEST).exists():
        raise DatasetRootTakenError(f"{root} already holds a generated shapes dataset (settings "
                                    f"{_read_manifest(root / MANIFEST)['generator']}); it is never "
                                    "replaced, as a run may be reading it: delete it, or point "
                                    "dataset.root at a new folder")
    if root.is_dir() and any(root.iterdir()):
        # Never replace a folder we did not generate: it may hold someone's data.
        raise DatasetRootTakenError(f"{root} exists and is not a generated shapes dataset (no {MANIFEST}); "
                                    "point dataset.root at an empty or new folder")
    _make_parent(root)
    staging = root.parent / f".{root.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    try:
        _write_scenes(staging, params)
    except BaseException:  # its name holds this pid: no later run would clear it
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if root.is_dir():  # empty (checked above); a directory cannot be renamed over on every system
        root.rmdir()
    os.replace(staging, root)


def _write_scenes(staging: Path, params: dict[str, Any]) -> None:
    """The images and the manifest, into the staging folder."""
    rng = random.Random(params["seed"])
    n = params["num_images"]
    split_of = random_splits(n, params["split_fractions"], params["seed"])
    items = []
    for index in range(n):
        scene = random_scene(rng, params["max_shapes"])
        file = f"images/shapes_{index:06d}.jpg"
        draw_scene(scene, params["image_size"]).save(staging / file, quality=92)
        items.append({
            "file": file,
            "split": split_of[index],
            "captions": describe(scene, rng, params["captions_per_image"]),
        })
    manifest = {"generator": params, "images": items}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))


def random_scene(rng: random.Random, max_shapes: int) -> list[Shape]:
    """1..max_shapes shapes in distinct cells of a 3x3 grid, sorted left to right."""
    count = rng.randint(1, max_shapes)
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], count)
    scene = []
    for row, column in cells:
        scene.append(Shape(
            colour=rng.choice(list(COLOURS)),
            kind=rng.choice(SHAPES),
            size=rng.choice(list(SIZES)),
            row=row,
            column=column,
            x=(column + 0.5) / 3 + rng.uniform(-0.03, 0.03),
            y=(row + 0.5) / 3 + rng.uniform(-0.03, 0.03),
        ))
    return sorted(scene, key=lambda s: (s.x, s.y))


def draw_scene(scene: list[Shape], image_size: int) -> Image.Image:
    image = Image.new("RGB", (image_size, image_size), (238, 238, 232))
    pen = ImageDraw.Draw(image)
    for shape in scene:
        cx, cy = shape.x * image_size, shape.y * image_size
        r = SIZES[shape.size] * image_size
        colour = COLOURS[shape.colour]
        if shape.kind == "circle":
            pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        elif shape.kind == "square":
            pen.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return image


def _a(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _name(shape: Shape) -> str:
    return _a(f"{shape.size} {shape.colour} {shape.kind}")


def _relation(a: Shape, b: Shape) -> tuple[str, str]:
    """How `a` lies relative to `b`, and the inverse."""
    if abs(a.x - b.x) >= abs(a.y - b.y):
        return ("to the left of", "to the right of") if a.x < b.x else ("to the right of", "to the left of")
    return ("above", "below") if a.y < b.y else ("below", "above")


def _region(shape: Shape) -> str:
    if (shape.row, shape.column) == (1, 1):
        return "center"
    return f"{ROWS[shape.row]} {COLUMNS[shape.column]}"


# How often annotators reach for each template, commonest first: real caption sets are skewed the
# same way (61% of Flickr8k's captions start with "a"), so their likeliest caption is a common one.
TEMPLATE_WEIGHTS = (16, 8, 4, 2, 1, 1, 1)
CAPTION_TEMPLATES = len(TEMPLATE_WEIGHTS)  # captions a scene can have: one per template


def describe(scene: list[Shape], rng: random.Random, count: int) -> list[str]:
    """`count` different captions of the scene, from templates drawn by `TEMPLATE_WEIGHTS`.

    Every template names the size, colour and kind of every shape, as annotators who agree on
    the facts and differ in wording; some add positions.
    """
    if len(scene) == 1:
        (s,) = scene
        templates = [
            _name(s),
            f"{_name(s)} on a plain background",
            f"{_name(s)} in the {_region(s)}",
            f"a picture of {_name(s)}",
            f"there is {_name(s)} in the {_region(s)} of the image",
            f"a single {s.size} {s.colour} {s.kind} on a plain background",
            f"one {s.size} {s.kind} colored {s.colour}",
        ]
    elif len(scene) == 2:
        a, b = scene
        rel, inverse = _relation(a, b)
        templates = [
            f"{_name(a)} and {_name(b)}",
            f"{_name(a)} {rel} {_name(b)}",
            f"two shapes: {_name(a)} and {_name(b)}",
            f"{_name(b)} {inverse} {_name(a)}",
            f"{_name(a)} next to {_name(b)}",
            f"a picture of two shapes, {_name(a)} and {_name(b)}",
            f"there is {_name(a)} {rel} {_name(b)}",
        ]
    else:
        a, b, c = scene[:3]
        rel, _ = _relation(a, b)
        listing = f"{_name(a)}, {_name(b)} and {_name(c)}"
        templates = [
            listing,
            f"three shapes: {listing}",
            f"{_name(a)} {rel} {_name(b)} and {_name(c)}",
            f"a picture of {listing}",
            f"there are three shapes: {listing}",
            f"{listing} on a plain background",
            f"three objects: {listing}",
        ]
    if count > len(templates):
        raise ValueError(f"dataset.captions_per_image={count} but only {len(templates)} templates exist")
    # Weighted sampling without replacement (Efraimidis-Spirakis): the largest u ** (1 / weight).
    keys = [rng.random() ** (1 / weight) for weight in TEMPLATE_WEIGHTS]
    chosen = sorted(range(len(templates)), key=keys.__getitem__, reverse=True)[:count]
    return [templates[i] for i in chosen]


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest["generator"], dict) or not isinstance(manifest["images"], list):
            raise TypeError("generator must be an object and images a list")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DatasetFormatError(
            f"{path}: not a valid shapes manifest ({error}); delete {path.parent} to regenerate it"
        ) from error
    return manifest
