"""`python -m captioner.caption CHECKPOINT IMAGE_OR_FOLDER ...`: caption your own images (a shell
over `captioner.Captioner`, inference/captioning.py).

The checkpoint says which CNN made its training features (name, weights, input size,
normalisation, scale); the same CNN is rebuilt here, so a new image gets exactly the features
training would have given it. `--attention out.png` draws one panel per generated word.

One bad file among good ones (not an image, empty, a decompression bomb) does not stop the
others: every readable image is captioned, each bad one is reported on its own line on stderr,
and the exit status is 1 at the end (2: nothing could be done, e.g. a missing checkpoint).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.backend_bases import FigureCanvasBase

from captioner.errors import ConfigError, UserError, exit_for_user_error
from captioner.inference.attention_figure import plot_attention
from captioner.inference.captioning import Captioner, CaptionResult
from captioner.inference.decode_arguments import add_decode_arguments, decode_changes

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_files(inputs: list[Path]) -> list[Path]:
    """The given files, and the images inside given folders (sorted)."""
    found = []
    for path in inputs:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image file or folder")
    if not found:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise FileNotFoundError(f"no images ({suffixes}) in {', '.join(map(str, inputs))}")
    return found


def figure_paths(base: Path, images: Sequence[str], several: bool) -> dict[str, Path]:
    """Where each image's attention figure goes: `base` for one image, else `<base>_<image's stem>`,
    numbered where images share a stem (a/dog.jpg, b/dog.jpg), so none overwrites another's;
    `.png` where `base` has no suffix, which is the file matplotlib writes."""
    suffix = base.suffix or ".png"
    if not several:
        return {image: base.with_suffix(suffix) for image in images}
    unique = list(dict.fromkeys(images))
    stems = Counter(Path(image).stem for image in unique)
    numbered: Counter[str] = Counter()
    paths = {}
    for image in unique:
        stem = Path(image).stem
        numbered[stem] += 1
        number = f"-{numbered[stem]}" if stems[stem] > 1 else ""
        paths[image] = base.with_name(f"{base.stem}_{stem}{number}{suffix}")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m captioner.caption", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a .ckpt file from a run's checkpoints/")
    parser.add_argument("images", type=Path, nargs="+", help="image files or folders of images")
    parser.add_argument("--attention", type=Path, metavar="OUT.png",
                        help="write the attention figure (several images: OUT_<image>.png)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of 'image<TAB>caption' lines")
    parser.add_argument("--weights-path", type=Path, help="the CNN weights file, if training used one")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_decode_arguments(parser)
    args = parser.parse_args(argv)
    try:
        decode = decode_changes(args)  # checked before the checkpoint is read
        if args.attention is not None:
            check_figure_path(args.attention)
        paths = image_files(args.images)
        model = Captioner.from_checkpoint(args.checkpoint, args.device, args.weights_path)
        decode["decode"] = decode.pop("strategy", None)
        results = model.caption(paths, attention=args.attention is not None, **decode)
    except (FileNotFoundError, UserError, KeyError) as error:
        exit_for_user_error(error, parser.prog)
    captioned = [r for r in results if r.ok]
    problems = [f"error: {r.image}: cannot read image ({r.error}); not captioned"
                for r in results if not r.ok]
    figures: dict[str, str] = {}
    if args.attention and captioned:
        problems += _draw_figures(captioned, args.attention, model.grid, figures, several=len(paths) > 1)
    shown = [{"image": r.image, "caption": r.caption} for r in captioned]
    for result in shown:
        if result["image"] in figures:
            result["figure"] = figures[result["image"]]
    if args.json:
        json.dump(shown, sys.stdout, indent=1)
        print()
    else:
        for result in shown:
            print(f"{result['image']}\t{result['caption']}")
    sys.stdout.flush()  # the captions first, then what went wrong
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(1)


def check_figure_path(path: Path) -> None:
    """Refuse, before any captioning, a --attention path no figure can be written to."""
    if path.is_dir():
        raise ConfigError(f"--attention {path}: a folder; give a file name (e.g. {path / 'attention.png'})")
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix and path.suffix[1:].lower() not in formats:
        raise ConfigError(f"--attention {path}: matplotlib cannot write {path.suffix} figures; use one of "
                          + ", ".join(f".{name}" for name in sorted(formats)))


def _draw_figures(results: list[CaptionResult], base: Path, grid: tuple[int, int] | None,
                  figures: dict[str, str], several: bool) -> list[str]:
    """Write each result's attention figure (its path into `figures`); the errors, one line each."""
    grid = tuple(grid or (1, results[0].attention.shape[1]))
    problems = []
    paths = figure_paths(base, [result.image for result in results], several)
    for result in results:
        figure = paths[result.image]
        try:
            figures[result.image] = str(plot_attention(Path(result.image), result.words, result.attention,
                                                       grid, figure))
        except (OSError, ValueError) as error:
            problems.append(f"error: cannot write the attention figure {figure} ({error}); the caption "
                            f"of {result.image} is printed without it")
    return problems


if __name__ == "__main__":
    main()
