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
from collections.abc import Sequence
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


ROWS = 256
"""Rows converted at a time: a conversion's temporary arrays stay a few MB, whatever the
image's size (its 8-bit result is the only full-size array it makes)."""


def to_rgb(image: Image.Image) -> np.ndarray:
    """The (height, width, 3) uint8 sRGB array a person would see for ``image``, whatever
    its pixel mode; ImageError for a mode that has no such picture."""
    icc = image.info.get("icc_profile")
    if image.mode == "CMYK":  # its profile says what the inks look like
        image = _through_profile(image, icc)
        icc = None
    mode = image.mode
    if mode in ("1", "L", "P", "PA", "LA", "RGB", "RGBA", "RGBa", "La", "RGBX", "CMYK",
                "YCbCr", "LAB", "HSV"):
        if "transparency" in image.info or mode in ("P", "PA", "LA", "La", "RGBa"):
            image = image.convert("RGBA")  # a transparent entry or colour becomes alpha
        if image.mode == "RGBA":
            rgb = _on_white(np.asarray(image))
        elif image.mode == "RGB":
            rgb = np.asarray(image)
        else:
            rgb = np.asarray(image.convert("RGB"))
    elif mode.startswith(("I", "F")):  # 16-bit and 32-bit integer or float grey
        grey = _to_8bit(np.asarray(image), mode)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
        icc = None  # a grey profile does not apply to the RGB picture made of it
    else:
        raise ImageError(f"pixel mode {mode} cannot be shown as an RGB picture")
    if icc:
        rgb = np.asarray(_through_profile(Image.fromarray(rgb), icc))
    return rgb


def _through_profile(image: Image.Image, icc: bytes | None) -> Image.Image:
    """``image`` converted to sRGB through the ICC profile ``icc``, unless it is sRGB already;
    a profile that cannot be read, or does not fit the image, leaves it as it is (the profile
    is metadata; the pixels are still there)."""
    if not icc:
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
    """RGBA laid on white, in integers, ``ROWS`` rows at a time."""
    out = np.empty((*rgba.shape[:2], 3), np.uint8)
    for top in range(0, rgba.shape[0], ROWS):
        part = rgba[top : top + ROWS].astype(np.uint32)
        alpha = part[:, :, 3:4]
        out[top : top + ROWS] = (part[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
    return out


def _to_8bit(samples: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit, 32-bit or float grey samples to 0..255 by their declared depth: 16-bit
    modes (and 32-bit integers that stay within 16 bits, as 16-bit PNGs open) by 1/257, floats
    in 0..1 by 255; anything else by its own range, taken over its finite samples. NaN and
    -inf show as the darkest, +inf as the brightest; an image with no finite sample is an
    ImageError."""
    finite = np.isfinite(samples) if samples.dtype.kind == "f" else None
    if finite is not None and not finite.any():
        raise ImageError("the image holds no finite sample (NaN or infinite pixels only)")
    valid = samples[finite] if finite is not None and not finite.all() else samples
    low, high = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 0.0)
    offset = 0.0
    if mode.startswith("I;16"):
        scale = 65535.0
    elif mode.startswith("F") and low >= 0.0 and high <= 1.0:
        scale = 1.0
    elif low >= 0.0 and high <= 65535.0:
        scale = 65535.0 if high > 255.0 else 255.0
    else:
        offset, scale = low, max(high - low, 1e-12)
    out = np.empty(samples.shape, np.uint8)
    for top in range(0, samples.shape[0], ROWS):
        part = np.nan_to_num(samples[top : top + ROWS].astype(np.float32), nan=offset,
                             posinf=offset + scale, neginf=offset)
        out[top : top + ROWS] = np.clip(np.rint((part - offset) * (255.0 / scale)), 0, 255)
    return out


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


def jpeg(image: Image.Image, quality: int = 88) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


MASK_MARGIN = 0.25
"""Of a face's box width and height, added on every side of a masked face."""
MASK_GREY = 128
MASKED_QUALITY = 92
"""JPEG quality of a masked image: it stands for the original, not for a thumbnail."""


def masked(data: bytes, boxes: Sequence[tuple[int, int, int, int]], settings: Settings
           ) -> bytes:
    """The image, upright, with every (x, y, w, h) face box and a margin around it painted
    flat grey: how an image is shown once faces were erased from it. A JPEG if the image was
    one, else a PNG (no more loss than the original had) if that is within
    ``max_image_bytes``, so that it decodes again for thumbnails and crops; else a JPEG."""
    decoded = decode(data, settings)
    pixels = decoded.pixels.copy()
    for x, y, w, h in boxes:
        mx, my = int(w * MASK_MARGIN), int(h * MASK_MARGIN)
        pixels[max(0, y - my):max(0, y + h + my), max(0, x - mx):max(0, x + w + mx)] = MASK_GREY
    image = Image.fromarray(pixels)
    if decoded.format != "JPEG":
        out = io.BytesIO()
        image.save(out, "PNG")
        if out.tell() <= settings.max_image_bytes:
            return out.getvalue()
    return jpeg(image, quality=MASKED_QUALITY)


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
