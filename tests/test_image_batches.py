"""Where extraction decodes images (cnn.decode): the workers' PIL path and the device path
(workers read bytes, torchvision decodes in batches on the CNN's device) give the CNN the same
pixels, fail on the same files with a reason, and make the same features file; the device's
resize is PIL's, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.features.cache import ensure_features
from captioner.features.feature_file import FeatureFile
from captioner.features.image_batches import ImageReadError, decoding_place, image_batches, jpeg_problem
from captioner.features.pil_resize import pil_bilinear_resize
from captioner.sources import load_records
from tests.conftest import compose_config, settings_of
from tests.hostile_files import decompression_bomb_png

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FLICKR8K_TEST = Path(__file__).resolve().parents[2] / "shared/data/flickr8k-test/Flicker8k_Dataset"


def _photo(size: tuple[int, int], seed: int) -> Image.Image:
    """A smooth picture with edges (a resize has something to round), not noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]] / max(size)
    channels = [np.sin(x * rng.uniform(3, 20) + y * rng.uniform(3, 20) + rng.uniform(0, 6)) for _ in range(3)]
    pixels = (np.stack(channels, -1) * 100 + 128 + (x > 0.5)[..., None] * 20).clip(0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def _batches(paths: list[Path], size: int, place: str, batch_size: int = 4,
             strict: bool = False) -> tuple[torch.Tensor, list[str]]:
    pixels, errors = [], []
    for batch, batch_errors in image_batches(paths, size, MEAN, STD, place, "cpu", batch_size, 0, strict):
        pixels.append(batch)
        errors += batch_errors
    return torch.cat(pixels), errors


def _grey_levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, the largest difference between two normalised batches, in 0..255 grey levels."""
    return ((a - b) * torch.tensor(STD).view(1, 3, 1, 1) * 255).abs().amax(dim=(1, 2, 3))


def _hostile(folder: Path) -> list[Path]:
    """Files a dataset folder can hold that no decoder should turn into a picture."""
    whole = folder / "whole.jpg"
    _photo((300, 200), 9).save(whole, quality=90)
    data = whole.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.jpg").write_text("not an image")
    scan = data.rfind(b"\xff\xda")
    broken = bytearray(data)
    broken[scan + 300: scan + 340] = b"\xff\x57" * 20  # a marker no JPEG has, inside the scan
    (folder / "broken.jpg").write_bytes(bytes(broken))
    return [folder / "truncated.jpg", folder / "text.jpg", folder / "broken.jpg",
            decompression_bomb_png(folder / "bomb.png")]


def test_auto_decodes_on_a_gpu_and_in_the_workers_elsewhere():
    assert decoding_place("auto", "cuda") == "device" and decoding_place("auto", "cuda:1") == "device"
    assert decoding_place("auto", "cpu") == "workers"
    assert decoding_place("device", "cpu") == "device" and decoding_place("workers", "cuda") == "workers"


def test_a_truncated_jpeg_is_told_from_a_whole_one_by_its_markers(tmp_path):
    _photo((120, 90), 0).save(tmp_path / "a.jpg", quality=85)
    data = (tmp_path / "a.jpg").read_bytes()
    assert jpeg_problem(data) == ""
    assert "truncated" in jpeg_problem(data[:-2]) and "truncated" in jpeg_problem(data[: len(data) // 2])
    assert "no image data" in jpeg_problem(data[:100])
    # An EXIF thumbnail ends with its own end-of-image marker before the main scan: still caught.
    thumbnail = b"Exif\x00\x00" + b"\xff\xd8\xff\xda" + b"\xff\xd9"  # a JPEG inside the APP1 segment
    framed = data[:2] + b"\xff\xe1" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail + data[2:]
    assert jpeg_problem(framed) == "" and "truncated" in jpeg_problem(framed[:-100])
    # What follows the image (a motion photo's video) is not read: a start-of-scan's bytes in it,
    # with no end-of-image after them, read as a truncated image before.
    assert jpeg_problem(data + b"ftypmp42" + b"\x00\xff\xda\x00" * 1000) == ""
    progressive = tmp_path / "p.jpg"
    _photo((120, 90), 1).save(progressive, quality=85, progressive=True)  # many scans, tables between
    data = progressive.read_bytes()
    assert data.count(b"\xff\xda") > 1 and jpeg_problem(data) == ""
    assert "truncated" in jpeg_problem(data[: len(data) * 2 // 3])
    assert "not a JPEG" in jpeg_problem(b"\x89PNG" + data)
    # stray bytes before a marker (libjpeg and PIL skip them): judged by the last scan, as before
    strayed = data[:2] + b"\x00\x00" + data[2:]
    assert jpeg_problem(strayed) == "" and "truncated" in jpeg_problem(strayed[:-2])


@pytest.mark.parametrize("size", [64, 150, 224, 260])
def test_both_places_give_the_cnn_the_same_pixels(tmp_path, size):
    paths = []
    for i, (shape, kind) in enumerate([((500, 375), "jpg"), ((224, 224), "jpg"), ((100, 140), "jpg"),
                                       ((333, 333), "png"), ((180, 120), "grey.jpg"), ((230, 700), "jpg")]):
        image = _photo(shape, i)
        paths.append(tmp_path / f"{i}.{kind}")
        (image.convert("L") if kind.startswith("grey") else image).save(paths[-1], quality=90)
    workers, worker_errors = _batches(paths, size, "workers")
    device, device_errors = _batches(paths, size, "device", batch_size=3)
    assert worker_errors == device_errors == [""] * len(paths)
    assert workers.shape == device.shape == (len(paths), 3, size, size)
    # On the CPU both decode with libjpeg-turbo and resize with PIL's arithmetic: equal, not close.
    assert torch.equal(workers, device), _grey_levels(workers, device)
    assert _grey_levels(device[:1], device[2:3]).item() > 50  # the pictures do differ


def _sideways(upright: Image.Image, path: Path, **options) -> Path:
    """`upright` stored as a phone stores a portrait: turned, with EXIF Orientation 6."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, **options)
    return path


def test_a_photo_stored_sideways_reaches_the_cnn_upright_in_both_places(tmp_path):
    upright = _photo((90, 60), seed=3)
    upright.save(tmp_path / "upright.png")
    sideways = _sideways(upright, tmp_path / "sideways.png")
    pixels, errors = _batches([tmp_path / "upright.png", sideways], 48, "workers")
    assert errors == ["", ""] and torch.equal(pixels[0], pixels[1])  # lossless: exactly upright
    jpeg = _sideways(upright, tmp_path / "sideways.jpg", quality=95)
    on_workers, _ = _batches([jpeg], 48, "workers")
    on_device, _ = _batches([jpeg], 48, "device")
    assert torch.equal(on_workers, on_device)  # the device path turns it upright too
    assert _grey_levels(on_workers, pixels[:1]) < 12  # the upright picture, bar JPEG's loss
    assert _grey_levels(on_workers, pixels[:1].transpose(2, 3)) > 60  # not the turned one


def test_a_16_bit_greyscale_png_is_the_picture_not_white(tmp_path):
    grey = np.asarray(_photo((64, 48), seed=4).convert("L"))
    Image.fromarray(grey).save(tmp_path / "eight.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")  # the same levels in 16 bits
    with Image.open(tmp_path / "sixteen.png") as image:
        assert image.mode == "I;16"
    for place in ("workers", "device"):
        pixels, errors = _batches([tmp_path / "eight.png", tmp_path / "sixteen.png"], 32, place)
        assert errors == ["", ""] and torch.equal(pixels[0], pixels[1]), place  # was 99.96% white


def test_the_resize_is_pils_bit_for_bit_shrinking_enlarging_and_both():
    rng = np.random.default_rng(0)
    for _ in range(40):
        height, width, out_height, out_width = (int(v) for v in rng.integers(1, 300, 4))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        expected = np.asarray(Image.fromarray(image).resize((out_width, out_height), Image.BILINEAR))
        resized = pil_bilinear_resize(torch.from_numpy(image).permute(2, 0, 1)[None], out_height, out_width)
        assert resized.dtype == torch.float32
        np.testing.assert_array_equal(resized[0].permute(1, 2, 0).numpy().astype(np.uint8), expected,
                                      err_msg=f"{height}x{width} -> {out_height}x{out_width}")


def test_both_places_refuse_the_same_files_with_a_reason_and_keep_the_others(tmp_path):
    good = tmp_path / "good.jpg"
    _photo((200, 150), 3).save(good, quality=90)
    hostile = _hostile(tmp_path)
    paths = [good, *hostile, good]
    workers, worker_errors = _batches(paths, 96, "workers")
    device, device_errors = _batches(paths, 96, "device")  # one batch holds good and bad files
    assert [bool(e) for e in worker_errors] == [bool(e) for e in device_errors] == [False, True, True, True,
                                                                                   True, False]
    assert "truncated" in device_errors[1] and "cannot identify" in device_errors[2]
    assert "broken data stream" in device_errors[3]  # the batch decoder refused it; so did PIL
    assert "exceeds limit" in device_errors[4]  # PIL's decompression-bomb check, on the header alone
    assert (device[1:5] == 0).all() and torch.equal(device[[0, 5]], workers[[0, 5]])
    with pytest.raises(ImageReadError, match="truncated.jpg"):
        _batches(paths, 96, "device", strict=True)


def test_the_device_path_makes_the_features_file_the_workers_path_makes(tmp_path):
    files = {}
    for place in ("workers", "device"):
        root = tmp_path / place
        # 80 px scenes into a 64 px CNN: the device path resizes too
        cfg = compose_config(f"cnn.decode={place}", "dataset.num_images=24", "dataset.image_size=80",
                             data_root=root)
        records = load_records("shapes", Path(cfg.dataset.root), cfg.dataset)
        files[place] = FeatureFile(ensure_features(settings_of(cfg), records, root))
    workers, device = files["workers"], files["device"]
    assert workers.identity == device.identity  # where images were decoded is provenance, not identity
    assert device.attrs["image_decoding"] == "device (torchvision on cpu)"
    assert workers.attrs["image_decoding"] == "workers (PIL on cpu)"
    # The same pixels, the same network: the same float16 values.
    a, b = workers.read(range(24)), device.read(range(24))
    np.testing.assert_array_equal(b, a)
    assert a.astype(np.float32).std() > 0


@pytest.mark.skipif(not FLICKR8K_TEST.is_dir(), reason="../shared/data/flickr8k-test is not here")
def test_real_photos_decode_alike_in_both_places():
    paths = sorted(FLICKR8K_TEST.glob("*.jpg"))[:16]
    for size in (224, 260):  # MobileNetV2's input as stored, EfficientNet-Lite2's enlarged
        workers, _ = _batches(paths, size, "workers", batch_size=8)
        device, _ = _batches(paths, size, "device", batch_size=8)
        assert torch.equal(workers, device), _grey_levels(workers, device).max()
