"""Decoding untrusted bytes: accepted formats, orientation, and clear errors for bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import FACES, PEOPLE
from facetrail.errors import ImageError, ImageTooLargeError
from facetrail.imaging import decode, masked
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


# Every pixel format reaches the detector as the picture a person sees -----------------------

REFERENCE = Image.open(PHOTO).convert("RGB").crop((20, 0, 230, 250))  # not square: 210x250


def close_to(pixels: np.ndarray, expected: Image.Image | np.ndarray, mean: float) -> bool:
    difference = np.abs(pixels.astype(int) - np.asarray(expected).astype(int))
    return pixels.shape == np.asarray(expected).shape and float(difference.mean()) <= mean


def png_rgb48(rgb: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow writes none)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    height, width, _ = rgb.shape
    samples = (rgb.astype(">u2") * 257).tobytes()
    stride = width * 6
    raw = b"".join(b"\0" + samples[row * stride:(row + 1) * stride] for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def grey16(fmt: str) -> bytes:
    grey = np.asarray(REFERENCE.convert("L")).astype(np.uint16) * 257
    return encoded(fmt, Image.fromarray(grey))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_is_scaled_not_clipped(fmt: str) -> None:
    pixels = decode(grey16(fmt), SETTINGS).pixels
    grey = np.asarray(REFERENCE.convert("L"))
    assert close_to(pixels, np.stack([grey] * 3, axis=2), mean=0.6)


def test_48_bit_rgb_png() -> None:
    rgb = np.asarray(REFERENCE)
    assert close_to(decode(png_rgb48(rgb), SETTINGS).pixels, rgb, mean=0.6)


def test_float_tiff_in_0_to_1() -> None:
    grey = np.asarray(REFERENCE.convert("L"))
    data = encoded("TIFF", Image.fromarray((grey / 255.0).astype(np.float32)))
    assert close_to(decode(data, SETTINGS).pixels, np.stack([grey] * 3, axis=2), mean=0.6)


def with_clear_border(image: Image.Image) -> tuple[Image.Image, np.ndarray]:
    """``image`` with a 40-pixel fully transparent black band at the top, and what a person
    sees: that band white."""
    rgba = np.asarray(image.convert("RGBA")).copy()
    rgba[:40] = (0, 0, 0, 0)
    seen = rgba[:, :, :3].copy()
    seen[:40] = 255
    return Image.fromarray(rgba), seen


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_are_laid_on_white(mode: str) -> None:
    source = REFERENCE if mode == "RGBA" else REFERENCE.convert("L").convert("RGB")
    rgba, seen = with_clear_border(source)
    data = encoded("PNG", rgba.convert(mode))
    assert close_to(decode(data, SETTINGS).pixels, seen, mean=0.6)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_a_transparent_entry(fmt: str) -> None:
    palette = REFERENCE.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
    indices = np.asarray(palette).copy()
    indices[:40] = 255
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.getpalette()[: 255 * 3] + [0, 0, 0])
    seen = np.asarray(palette.convert("RGB")).copy()
    seen[:40] = 255
    pixels = decode(encoded(fmt, image, transparency=255), SETTINGS).pixels
    assert close_to(pixels, seen, mean=0.6)
    assert close_to(pixels[40:], np.asarray(REFERENCE)[40:], mean=8.0)  # and it is the photo


@pytest.mark.parametrize(("fmt", "mean"), [("JPEG", 10.0), ("TIFF", 0.6)])
def test_cmyk(fmt: str, mean: float) -> None:
    data = encoded(fmt, REFERENCE.convert("CMYK"))
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert close_to(decode(data, SETTINGS).pixels, REFERENCE, mean=mean)


def test_an_srgb_profile_changes_nothing_and_a_broken_one_is_ignored() -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for profile in (srgb, b"not a colour profile"):
        data = encoded("PNG", REFERENCE, icc_profile=profile)
        assert close_to(decode(data, SETTINGS).pixels, REFERENCE, mean=0.6)


TRANSPOSES = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_270}
"""For each EXIF orientation, how the picture a person sees is stored."""


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
def test_every_orientation_tag_is_applied(fmt: str, orientation: int) -> None:
    stored = REFERENCE.transpose(TRANSPOSES[orientation]) if orientation > 1 else REFERENCE
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(fmt, stored, exif=exif, **({"lossless": True} if fmt == "WEBP" else {}))
    assert close_to(decode(data, SETTINGS).pixels, REFERENCE, mean=0.6)


def test_multi_page_tiff_reads_the_first_page() -> None:
    data = encoded("TIFF", REFERENCE, save_all=True, append_images=[Image.new("RGB", (210, 250))])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert close_to(decode(data, SETTINGS).pixels, REFERENCE, mean=0.6)


def test_a_mode_with_no_picture_is_an_error_not_an_empty_image() -> None:
    from facetrail.imaging import to_rgb

    with pytest.raises(ImageError, match="pixel mode"):
        to_rgb(_odd_mode())


def _odd_mode() -> Image.Image:
    image = Image.new("RGB", (4, 4))
    image._mode = "XYZ?"  # no decoder gives it today; to_rgb must still say so
    return image


def test_a_float_image_with_a_nan_is_still_the_picture() -> None:
    grey = (np.asarray(REFERENCE.convert("L")) / 255.0).astype(np.float32)
    grey[0, 0], grey[0, 1] = np.nan, np.inf
    pixels = decode(encoded("TIFF", Image.fromarray(grey)), SETTINGS).pixels
    expected = np.stack([np.asarray(REFERENCE.convert("L"))] * 3, axis=2)
    assert close_to(pixels[1:], expected[1:], mean=0.6)
    with pytest.raises(ImageError, match="no finite sample"):
        decode(encoded("TIFF", Image.fromarray(np.full((40, 40), np.nan, np.float32))),
               SETTINGS)


def test_an_rgb_png_with_a_transparent_colour() -> None:
    rgb = np.asarray(REFERENCE).copy()
    rgb[:40] = (1, 2, 3)  # the colour the PNG declares transparent
    seen = rgb.copy()
    seen[:40] = 255
    data = encoded("PNG", Image.fromarray(rgb), transparency=(1, 2, 3))
    assert close_to(decode(data, SETTINGS).pixels, seen, mean=0.6)


def test_a_large_transparent_image_is_converted_in_bounded_memory() -> None:
    """8 Mpx of RGBA: the decoded array, its 24 MB result and a few rows at a time (a whole-image
    float conversion peaked at 448 MB)."""
    import tracemalloc

    big = Image.new("RGBA", (4000, 2000), (10, 200, 30, 128))
    data = encoded("PNG", big)
    tracemalloc.start()
    try:
        pixels = decode(data, Settings(home="/nonexistent", max_pixels=10_000_000)).pixels
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pixels.shape == (2000, 4000, 3) and tuple(pixels[5, 5]) == (132, 227, 142)
    assert peak < 128 * 2**20, f"{peak / 2**20:.0f} MB"


def test_masked_paints_boxes_and_margins_grey_in_the_image_s_own_kind() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    shown = masked(out.getvalue(), [(40, 40, 20, 20), (-5, 90, 20, 30)], Settings())
    with Image.open(io.BytesIO(shown)) as image:
        assert image.format == "PNG"  # lossless stays lossless
        got = np.asarray(image)
    assert (got[35:65, 35:65] == 128).all()  # the box and a quarter of it on every side
    assert (got[83:, :20] == 128).all()  # a box partly outside the image
    assert (got[:34] == pixels[:34]).all() and (got[66:80, 25:] == pixels[66:80, 25:]).all()
    jpeg = masked((PEOPLE / "Ashanti" / "Ashanti_0001.jpg").read_bytes(), [(0, 0, 8, 8)],
                  Settings())
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"


def test_a_masked_image_that_would_not_decode_again_as_png_is_a_jpeg() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "WEBP", quality=30)  # compact; as a PNG it is not
    settings = Settings(max_image_bytes=max(len(out.getvalue()), 60_000))
    shown = masked(out.getvalue(), [(10, 10, 20, 20)], settings)
    assert len(shown) <= settings.max_image_bytes
    assert Image.open(io.BytesIO(shown)).format == "JPEG"
    assert decode(shown, settings).width == 200  # thumbnails and crops are made from it
