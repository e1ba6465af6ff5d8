"""An opened image as the CNN and the figures see it: upright, 8-bit RGB.

Two things PIL's `convert("RGB")` gets wrong on its own:
- EXIF orientation: a phone stores a portrait sideways with an Orientation tag that every viewer
  applies; without it the CNN sees the photo on its side.
- 16-bit greyscale (mode I;16, or I from some PNGs): `convert` clips every level above 255, so a
  normal 16-bit photo comes out nearly all white; its top 8 bits are the picture.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ORIENTATION = 0x0112  # the EXIF tag (PIL's ExifTags.Base.Orientation, which older Pillows lack)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF Orientation tag (1: upright, as stored; also where there is none)."""
    try:
        return int(image.getexif().get(_ORIENTATION, 1))
    except (ValueError, TypeError, OSError, SyntaxError):  # a damaged EXIF block: taken as upright
        return 1


def upright_rgb(image: Image.Image) -> Image.Image:
    """`image` turned upright by its EXIF orientation, as 8-bit RGB."""
    if exif_orientation(image) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT:
        levels = np.asarray(image).astype(np.int64).clip(0, 65535) >> 8
        image = Image.fromarray(levels.astype(np.uint8), mode="L")
    return image.convert("RGB")
