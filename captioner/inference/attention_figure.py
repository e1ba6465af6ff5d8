"""The attention figure: the image once per generated word, with that step's map over it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from captioner.features.upright_rgb import upright_rgb  # noqa: E402


def plot_attention(image_path: Path, words: Sequence[str], attention: np.ndarray,
                   grid: tuple[int, int], out_path: Path, columns: int = 5) -> Path:
    """Write a PNG with one panel per word: the image, the word as title, its map overlaid.

    `attention` is (len(words), h*w): row t is the weight of each region when word t was chosen.
    """
    attention = np.asarray(attention, dtype=np.float32)
    if attention.shape != (len(words), grid[0] * grid[1]):
        raise ValueError(f"attention of shape {attention.shape} does not fit {len(words)} words "
                         f"on a {grid[0]}x{grid[1]} grid")
    with Image.open(image_path) as image:
        pixels = np.asarray(upright_rgb(image))  # as the CNN saw it
    height, width = pixels.shape[:2]
    columns = max(1, min(columns, len(words)))
    rows = max(1, math.ceil(len(words) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, word, weights in zip(axes.flat, words, attention, strict=False):
        ax.imshow(pixels)
        # Upsample the grid smoothly to the image's size, as in Show, Attend and Tell.
        ax.imshow(weights.reshape(grid), cmap="gray", alpha=0.6, interpolation="bilinear",
                  extent=(0, width, height, 0))
        ax.set_title(word, fontsize=11)
    figure.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=80)
    plt.close(figure)
    return out_path
