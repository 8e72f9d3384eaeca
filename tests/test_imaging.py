"""Decoding untrusted bytes: accepted formats, orientation, and clear errors for bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import FACES, PEOPLE
from facetrail.errors import ImageError, ImageTooLargeError
from facetrail.imaging import decode
from facetrail.settings import Settings

SETTINGS = Settings(home="/nonexistent")
PHOTO = PEOPLE / "Ashanti" / "Ashanti_0001.jpg"


def encoded(fmt: str, image: Image.Image | None = None, **kwargs: object) -> bytes:
    out = io.BytesIO()
    (image or Image.open(PHOTO)).save(out, fmt, **kwargs)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_accepted_formats_decode_to_rgb(fmt: str) -> None:
    image = decode(encoded(fmt), SETTINGS)
    assert image.pixels.shape == (250, 250, 3) and image.pixels.dtype == np.uint8
    assert image.format == fmt


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF"])
def test_avif_and_heif(fmt: str) -> None:
    if fmt == "HEIF":
        heif = pytest.importorskip("pillow_heif")  # the heif extra; the dev extra installs it
        heif.register_heif_opener()  # to write the test file; decode() registers it itself
    image = decode(encoded(fmt), SETTINGS)
    assert image.pixels.shape == (250, 250, 3) and image.format == fmt


def test_animated_gif_uses_first_frame() -> None:
    red, blue = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    data = encoded("GIF", red, save_all=True, append_images=[blue])
    pixels = decode(data, SETTINGS).pixels
    assert pixels[0, 0, 0] > 200 and pixels[0, 0, 2] < 50


def test_rgba_png_is_flattened() -> None:
    image = decode((FACES / "edge_cases" / "obama2_32bit_rgba.png").read_bytes(), SETTINGS)
    assert image.pixels.shape[2] == 3


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encoded("JPEG", Image.new("RGB", (60, 30)), exif=exif)
    assert decode(data, SETTINGS).pixels.shape[:2] == (60, 30)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"this is text, not a photo\n" * 10, "not a recognised image"),
        (encoded("JPEG")[:3000], "corrupt or truncated"),
        (encoded("PNG")[:-200], "corrupt or truncated"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not a recognised image"),
    ],
    ids=["zero-bytes", "text", "truncated-jpeg", "truncated-png", "eps"],
)
def test_bad_bytes_raise_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode(data, SETTINGS)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = encoded("PNG", Image.new("1", (9000, 9000)))  # 81 Mpx in a few kB
    assert len(bomb) < 50_000
    with pytest.raises(ImageTooLargeError, match="possible decompression bomb"):
        decode(bomb, SETTINGS)


def test_limits_come_from_settings() -> None:
    data = encoded("PNG")
    with pytest.raises(ImageTooLargeError, match="FACETRAIL_MAX_SIDE"):
        decode(data, Settings(home="/nonexistent", max_side=200))
    with pytest.raises(ImageTooLargeError, match="FACETRAIL_MAX_IMAGE_BYTES"):
        decode(data, Settings(home="/nonexistent", max_image_bytes=100))
    with pytest.raises(ImageError, match="FACETRAIL_MIN_SIDE"):
        decode(encoded("PNG", Image.new("RGB", (8, 8))), SETTINGS)
