"""PIL's bilinear resize, bit for bit, as tensor arithmetic on any device.

Extraction decodes on the GPU (image_batches.py), but the features must not depend on where the
images were decoded: torch's own antialiased `interpolate` differs from PIL by a grey level on
~16% of values, which moves an EfficientNet's features by ~5% (relative RMS). So this repeats
Pillow's algorithm (libImaging/Resample.c): per output pixel, triangle-filter weights over a
support widened by the shrink factor, normalised, then turned into 22-bit fixed point; a
horizontal pass and a vertical one (in the order Pillow picks), each rounded and clipped to
0..255. Both passes are matrix products in float64, which hold the fixed-point sums (< 2^31) exactly.
"""

from __future__ import annotations

import math
from functools import lru_cache

import PIL
import torch

_PRECISION_BITS = 32 - 8 - 2  # Resample.c, for 8-bit channels
# Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many pixels
# as the width (for speed); the rounding between the passes makes the order visible.
_PILLOW_PICKS_ORDER = int(PIL.__version__.split(".")[0]) >= 13


@lru_cache(maxsize=64)
def _fixed_point_weights(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size, in_size) float64: Pillow's fixed-point bilinear coefficients (integers)."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 1.0 * filter_scale  # the bilinear (triangle) filter's support is 1
    inverse = 1.0 / filter_scale  # multiplied, not divided by: Pillow's rounding
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), in_size)
        taps = [max(0.0, 1.0 - abs((x - center + 0.5) * inverse)) for x in range(first, last)]
        total = sum(taps)
        for x, tap in zip(range(first, last), taps, strict=True):
            tap = tap / total if total != 0.0 else tap
            # C's (int)(0.5 + w * 2^22): truncation toward zero; w >= 0 here
            weights[out, x] = float(math.trunc(0.5 + tap * (1 << _PRECISION_BITS)))
    return weights


def _round_and_clip(sums: torch.Tensor) -> torch.Tensor:
    return torch.floor((sums + (1 << (_PRECISION_BITS - 1))) / (1 << _PRECISION_BITS)).clamp_(0, 255)


def pil_bilinear_resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, height, width) float32 holding the grey levels that
    `PIL.Image.resize((width, height), Image.BILINEAR)` gives, on `images`' device."""
    pixels = images.to(torch.float64)
    in_height, in_width = pixels.shape[-2:]
    vertical_first = _PILLOW_PICKS_ORDER and in_height - height > 0 and \
        in_height - height > 2 * (in_width - width)
    passes = [_vertical, _horizontal] if vertical_first else [_horizontal, _vertical]
    for resample in passes:
        pixels = resample(pixels, height, width)
    return pixels.float()


def _horizontal(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if pixels.shape[-1] == width:
        return pixels
    weights = _fixed_point_weights(pixels.shape[-1], width).to(pixels.device)
    return _round_and_clip(pixels @ weights.T)


def _vertical(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if pixels.shape[-2] == height:
        return pixels
    weights = _fixed_point_weights(pixels.shape[-2], height).to(pixels.device)
    return _round_and_clip(weights @ pixels)
