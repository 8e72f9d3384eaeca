"""Imaging stage: turn untrusted bytes into an RGB pixel array, or a clear ImageError.

Limits (all in Settings, enforced before any pixel is decoded):
- ``max_image_bytes``: encoded size;
- ``max_side`` / ``min_side``: width and height from the header;
- ``max_pixels``: width x height from the header, the decompression-bomb guard.

Only these formats are opened: JPEG, PNG, WebP, GIF (first frame), BMP, TIFF (first
page), AVIF when Pillow was built with it, and HEIF/HEIC with the ``heif`` extra. Pillow is
never asked to guess among its other formats (EPS, for one, would run Ghostscript). The EXIF
orientation is applied, so every coordinate facetrail reports is in the image as a person
sees it.

Every pixel format the decoder accepts reaches the detector as the 8-bit sRGB picture a
person would see (``to_rgb``): 16-bit and 32-bit samples are scaled, not clipped; transparent
pixels are laid on white; CMYK and images with an embedded colour profile are converted
through that profile; bilevel, grey and palette images are expanded. A pixel mode that cannot
be shown that way is an ImageError, never an image with no faces. Of a multi-frame file
(animated GIF, WebP or PNG; multi-page TIFF) the first frame is read, as a viewer shows it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError, features

from facetrail.errors import ImageError, ImageTooLargeError
from facetrail.settings import Settings

BASE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


@dataclass(frozen=True)
class DecodedImage:
    sha256: str
    pixels: np.ndarray
    """uint8 array of shape (height, width, 3), RGB."""
    format: str

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode(data: bytes, settings: Settings, sha256: str | None = None) -> DecodedImage:
    if not data:
        raise ImageError("empty file (0 bytes)")
    if len(data) > settings.max_image_bytes:
        raise ImageTooLargeError(
            f"{len(data)} bytes is over the limit of {settings.max_image_bytes} "
            "(FACETRAIL_MAX_IMAGE_BYTES)"
        )
    digest = sha256 or sha256_hex(data)
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is lower than Pillow's bomb warning; turn any warning into
            # an error rather than let it pass silently.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_formats()) as opened:
                fmt = opened.format or "?"
                _check_size(opened.width, opened.height, settings)
                opened.seek(0)
                upright = ImageOps.exif_transpose(opened)
                pixels = to_rgb(upright)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"not a recognised image (accepted: {', '.join(_formats())})"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise ImageError(f"corrupt or truncated image: {exc}") from exc
    except (TypeError, KeyError, ArithmeticError, AttributeError, AssertionError) as exc:
        # Pillow's decoders raise whatever their parsing meets in malformed bytes (a TIFF
        # whose strip offsets are not numbers: TypeError; fuzz/fuzz_imaging.py found these).
        raise ImageError(f"corrupt image ({type(exc).__name__} in the decoder: {exc})") from exc
    return DecodedImage(sha256=digest, pixels=pixels, format=fmt)


WHITE = 255.0
"""What transparent pixels are laid on: the page a person sees them on."""


def to_rgb(image: Image.Image) -> np.ndarray:
    """The (height, width, 3) uint8 sRGB array a person would see for ``image``, whatever
    its pixel mode; ImageError for a mode that has no such picture."""
    image = _through_profile(image)
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode in ("1", "L", "P", "PA", "LA", "RGBA", "RGBa", "La", "RGBX", "CMYK", "YCbCr", "LAB",
                "HSV"):
        if "transparency" in image.info or mode in ("P", "PA", "LA", "La", "RGBa"):
            image = image.convert("RGBA")  # a palette's transparent entry becomes alpha
        if image.mode == "RGBA":
            return _on_white(np.asarray(image, dtype=np.float32))
        return np.asarray(image.convert("RGB"))
    if mode.startswith(("I", "F")):  # 16-bit and 32-bit integer or float grey
        grey = _to_8bit(np.asarray(image), mode)
        return np.repeat(grey[:, :, None], 3, axis=2)
    raise ImageError(f"pixel mode {mode} cannot be shown as an RGB picture")


def _through_profile(image: Image.Image) -> Image.Image:
    """Convert to sRGB through the embedded ICC profile, if the image has one and it is not
    sRGB already; a profile that cannot be read leaves the image as it is (the profile is
    metadata; the pixels are still there)."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "CMYK", "L"):
        return image
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in (ImageCms.getProfileDescription(profile) or "").lower():
            return image
        converted = ImageCms.profileToProfile(image, profile, _srgb(), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image
    return converted if converted is not None else image


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _on_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[:, :, 3:4] / 255.0
    flat = rgba[:, :, :3] * alpha + WHITE * (1.0 - alpha)
    return np.clip(np.rint(flat), 0, 255).astype(np.uint8)


def _to_8bit(samples: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit, 32-bit or float grey samples to 0..255 by their declared depth: 16-bit
    modes (and 32-bit integers that stay within 16 bits, as 16-bit PNGs open) by 1/257, floats
    in 0..1 by 255; anything else by its own range."""
    values = samples.astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        scale = 65535.0
    elif mode.startswith("F") and low >= 0.0 and high <= 1.0:
        scale = 1.0
    elif low >= 0.0 and high <= 65535.0:
        scale = 65535.0 if high > 255.0 else 255.0
    else:
        values, scale = values - low, max(high - low, 1e-12)
    return np.clip(np.rint(values * (255.0 / scale)), 0, 255).astype(np.uint8)


def _check_size(width: int, height: int, settings: Settings) -> None:
    if max(width, height) > settings.max_side:
        raise ImageTooLargeError(
            f"{width}x{height} exceeds the maximum side of {settings.max_side} px "
            "(FACETRAIL_MAX_SIDE)"
        )
    if width * height > settings.max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} = {width * height} pixels exceeds the limit of "
            f"{settings.max_pixels} (FACETRAIL_MAX_PIXELS); possible decompression bomb"
        )
    if min(width, height) < settings.min_side:
        raise ImageError(
            f"{width}x{height} is below the minimum side of {settings.min_side} px "
            "(FACETRAIL_MIN_SIDE)"
        )


@functools.cache
def _formats() -> tuple[str, ...]:
    """Formats to open; registering the HEIF opener once is the only effect."""
    formats = list(BASE_FORMATS)
    if features.check("avif"):  # Pillow >= 11.2 wheels read AVIF themselves
        formats.append("AVIF")
    try:
        import pillow_heif  # optional extra: facetrail[heif]
    except ImportError:
        return tuple(formats)
    pillow_heif.register_heif_opener()
    return (*formats, "HEIF")


CROP_SIDE = 256
"""Longest side of a face crop, in pixels."""
CROP_MARGIN = 0.3
"""Added around a face box on every side, as a fraction of the box's size."""


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88)
    return out.getvalue()


def face_crop(data: bytes, box: tuple[int, int, int, int], settings: Settings) -> bytes:
    """A JPEG of one face: its (x, y, w, h) box with a margin, cut from the upright image
    (boxes are in upright pixels), at most ``CROP_SIDE`` pixels on its longest side. Never
    more of the image than the margin around that face."""
    decoded = decode(data, settings)
    x, y, w, h = box
    mx, my = int(w * CROP_MARGIN), int(h * CROP_MARGIN)
    region = (max(0, x - mx), max(0, y - my),
              min(decoded.width, x + w + mx), min(decoded.height, y + h + my))
    image = Image.fromarray(decoded.pixels).crop(region)
    image.thumbnail((CROP_SIDE, CROP_SIDE))
    return jpeg(image)
