"""Batches of preprocessed images for extraction, decoded where `cnn.decode` says.

- `workers`: the DataLoader's workers decode and resize each image with PIL (the CPU path).
- `device`: workers only read the files' bytes; JPEGs are decoded in batches by torchvision on the
  CNN's device (nvjpeg on a GPU), then resized and normalised there. A CPU worker cannot feed a
  GPU CNN at thousands of images/s; the GPU decoder can. Other formats (PNG, ...) are decoded by
  the workers with PIL, as on the CPU path.
- `auto`: `device` on a CUDA device, `workers` elsewhere.

Both give the CNN the same input: the device repeats PIL's resize bit for bit (pil_resize.py),
and torchvision's CPU decoder is the libjpeg-turbo PIL uses; nvjpeg's IDCT may differ by a level.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from captioner.errors import UserError
from captioner.features.pil_resize import pil_bilinear_resize
from captioner.features.upright_rgb import exif_orientation, upright_rgb
from captioner.worker_processes import worker_context

# torchvision >= 0.29 deprecates its image codecs in favour of TorchCodec; they still work (and
# the GPU machine has an older torchvision): say it once, not per batch.
warnings.filterwarnings("ignore", message=r".*decod.*deprecated", category=UserWarning)



class ImageReadError(UserError, OSError):
    """An image file that cannot be decoded (with `dataset.strict=true`, or a calibration image)."""


# What PIL raises on a file that is not the image it claims to be: not an image, truncated,
# corrupt inside, or a decompression bomb (a header declaring far more pixels than any photo).
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError, struct.error,
              zlib.error, Image.DecompressionBombError)


class ImageFiles(Dataset):
    """Decoded, resized and normalised images, for the extraction DataLoader's workers.

    Items are (image, error): an unreadable or truncated file gives a zero image and the reason,
    unless `strict`, where it is an error naming the file.
    """

    def __init__(self, paths: Sequence[Path], size: int, mean: Sequence[float], std: Sequence[float],
                 strict: bool = True):
        self.paths = list(paths)
        self.size = size
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.strict = strict

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return self.pixels(image), ""
        except UNREADABLE as error:
            if self.strict:
                raise ImageReadError(f"{path}: cannot read image ({error}); replace or remove the "
                                     "file, or set dataset.strict=false to skip such images") from error
            return torch.zeros(3, self.size, self.size), f"{error}" or type(error).__name__

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """A decoded image as the CNN takes it: upright RGB, resized to `size`, normalised (3, size, size)."""
        image = upright_rgb(image).resize((self.size, self.size), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        return (pixels.float() / 255.0 - self.mean) / self.std


def decoding_place(choice: str, device: str | torch.device) -> str:
    """`workers` or `device`, for `cnn.decode` (`auto`: the device decodes on CUDA only)."""
    if choice == "auto":
        return "device" if torch.device(device).type == "cuda" else "workers"
    return choice


def jpeg_problem(data: bytes) -> str:
    """Why these JPEG bytes cannot be decoded whole ("" if they can, as far as the markers say).

    A truncated JPEG decodes without an error in libjpeg and nvjpeg (grey below the cut), so it is
    caught here by walking the file's segments from its start to the end-of-image marker: segment
    lengths skip an EXIF thumbnail, and whatever follows the image (a motion photo's video) is
    never read. Entropy-coded data holds 0xFF only stuffed (0xFF00) or as a restart marker.
    """
    if not data.startswith(b"\xff\xd8"):
        return "not a JPEG (no start-of-image marker)"
    position, scanned = 2, False
    while True:
        while position < len(data) and data[position] == 0xFF and position + 1 < len(data) \
                and data[position + 1] == 0xFF:
            position += 1  # fill bytes before a marker
        if position + 1 >= len(data):
            break  # cut off
        if data[position] != 0xFF or data[position + 1] == 0xD8:
            # Stray bytes where a marker belongs (libjpeg skips them with a warning), a second
            # start-of-image: the structure is lost; judge by the last scan, as before the walk.
            return _ends_after_its_last_scan(data)
        marker = data[position + 1]
        if marker == 0xD9:  # end of image
            return "" if scanned else "no image data (no start-of-scan marker)"
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        if marker < 0xC0:  # no JPEG marker: a broken stream, which the decoder refuses itself
            return ""
        if position + 4 > len(data):
            break
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xDA:  # start of scan: its entropy-coded data runs to the next marker
            scanned = True
            position = _end_of_entropy_data(data, position)
    return ("image file is truncated (no end-of-image marker after its last scan)" if scanned
            else "no image data (no start-of-scan marker)")


def _ends_after_its_last_scan(data: bytes) -> str:
    scan = data.rfind(b"\xff\xda")
    if scan < 0:
        return "no image data (no start-of-scan marker)"
    if data.find(b"\xff\xd9", scan) < 0:
        return "image file is truncated (no end-of-image marker after its last scan)"
    return ""


def _end_of_entropy_data(data: bytes, position: int) -> int:
    """Where the marker after a scan's entropy-coded data starts (len(data) if none does)."""
    while (position := data.find(b"\xff", position)) >= 0 and position + 1 < len(data):
        following = data[position + 1]
        if following != 0x00 and not 0xD0 <= following <= 0xD7 and following != 0xFF:
            return position
        position += 1 if following == 0xFF else 2
    return len(data)


class ImageBytes(Dataset):
    """Items are (path, payload, error) for the `device` decoding.

    payload: a JPEG's bytes (1-D uint8), or for another format the image decoded by PIL (H, W, 3
    uint8). The header is read here, so a file that is no image, a decompression bomb or a
    truncated JPEG gets its reason (and an empty payload) before any decoding.
    """

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor, str]:
        path = self.paths[index]
        nothing = torch.empty(0, dtype=torch.uint8)
        try:
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as image:  # the header only; PIL's bomb check
                if image.format != "JPEG" or exif_orientation(image) != 1:  # rare: PIL turns it upright
                    return str(path), _rgb(image), ""
            problem = jpeg_problem(data)
        except UNREADABLE as error:
            return str(path), nothing, _reason(error)
        if problem:
            return str(path), nothing, problem
        return str(path), torch.frombuffer(bytearray(data), dtype=torch.uint8), ""


def _reason(error: Exception) -> str:
    if isinstance(error, UnidentifiedImageError):  # its text names a BytesIO, not the file
        return "cannot identify image file (not an image format PIL reads)"
    return f"{error}" or type(error).__name__


def _rgb(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(upright_rgb(image), dtype=np.uint8).copy())


class DeviceDecoder:
    """Items of `ImageBytes` -> (normalised pixels (B, 3, size, size) on `device`, errors)."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], device: str | torch.device):
        self.size = size
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def __call__(self, items: Sequence[tuple[str, torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
        errors = [error for _, _, error in items]
        decoded: dict[int, torch.Tensor] = {}  # (3, H, W) uint8 on the device
        jpegs = [i for i, (_, payload, error) in enumerate(items) if not error and payload.dim() == 1]
        for i, (_, payload, error) in enumerate(items):
            if not error and payload.dim() == 3:
                decoded[i] = payload.permute(2, 0, 1).to(self.device)
        for i, image in zip(jpegs, self._decode_jpegs([items[i][1] for i in jpegs]), strict=True):
            if isinstance(image, str):
                errors[i] = image
            else:
                decoded[i] = image
        pixels = torch.zeros(len(items), 3, self.size, self.size, device=self.device)
        for indices, images in _same_size(decoded).items():
            pixels[list(indices)] = self._resized(torch.stack(images))
        readable = [i for i in range(len(items)) if i in decoded]
        pixels[readable] = (pixels[readable] / 255.0 - self.mean) / self.std
        return pixels, errors

    def _decode_jpegs(self, payloads: list[torch.Tensor]) -> list[torch.Tensor | str]:
        """Each JPEG decoded to RGB on the device, or why it could not be."""
        from torchvision.io import ImageReadMode, decode_jpeg

        if not payloads:
            return []
        try:  # one call for the batch: nvjpeg's batched decoder
            return list(decode_jpeg(payloads, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:
            pass  # some image in the batch: find which, one by one
        results: list[torch.Tensor | str] = []
        for payload in payloads:
            try:
                results.append(decode_jpeg(payload, mode=ImageReadMode.RGB, device=self.device))
            except RuntimeError:
                results.append(self._decode_with_pil(payload))
        return results

    def _decode_with_pil(self, payload: torch.Tensor) -> torch.Tensor | str:
        """What nvjpeg refuses but PIL reads (e.g. some CMYK JPEGs) comes through the CPU."""
        try:
            with Image.open(io.BytesIO(payload.numpy().tobytes())) as image:
                return _rgb(image).permute(2, 0, 1).to(self.device)
        except UNREADABLE as error:
            return _reason(error)

    def _resized(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 -> (N, 3, size, size) float grey levels, PIL's resize bit for bit."""
        return pil_bilinear_resize(images, self.size, self.size)


def _same_size(decoded: dict[int, torch.Tensor]) -> dict[tuple[int, ...], list[torch.Tensor]]:
    """Images grouped by their size, so each group resizes in one call."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in decoded.items():
        groups.setdefault(tuple(image.shape[-2:]), []).append(i)
    return {tuple(indices): [decoded[i] for i in indices] for indices in groups.values()}


def image_batches(paths: Sequence[Path], size: int, mean: Sequence[float], std: Sequence[float],
                  place: str, device: str | torch.device, batch_size: int, num_workers: int,
                  strict: bool) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """(pixels on `device`, errors) per batch of `paths`, decoded in `place` (`decoding_place`).

    errors[i] is "" for a readable image, else why it is not (its pixels are zeros); with
    `strict` the first unreadable image is an `ImageReadError` naming the file.
    """
    on_gpu = torch.device(device).type == "cuda"
    context = worker_context(num_workers)
    if place == "workers":
        loader = DataLoader(ImageFiles(paths, size, mean, std, strict=strict), batch_size=batch_size,
                            num_workers=num_workers, pin_memory=on_gpu, multiprocessing_context=context)
        for batch, errors in loader:
            yield batch.to(device, non_blocking=True), list(errors)
        return
    decoder = DeviceDecoder(size, mean, std, device)
    loader = DataLoader(ImageBytes(paths), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=list, multiprocessing_context=context)
    for items in loader:
        pixels, errors = decoder(items)
        if strict and (bad := next((i for i, error in enumerate(errors) if error), None)) is not None:
            raise ImageReadError(f"{items[bad][0]}: cannot read image ({errors[bad]}); replace or remove "
                                 "the file, or set dataset.strict=false to skip such images")
        yield pixels, errors
