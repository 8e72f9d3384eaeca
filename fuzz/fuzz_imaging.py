"""Fuzz image decoding (``facetrail.imaging.decode``): every byte string is a DecodedImage of
8-bit RGB pixels, or an ``ImageError``."""

from __future__ import annotations

import atheris

with atheris.instrument_imports():
    import numpy as np

    from facetrail import imaging
    from facetrail.settings import Settings

SETTINGS = Settings(home="/nonexistent", max_pixels=4_000_000, max_side=4000)


def one_input(data: bytes) -> None:
    image = imaging.decode(data, SETTINGS)
    assert image.pixels.dtype == np.uint8 and image.pixels.ndim == 3, image.pixels.shape
    assert image.pixels.shape[2] == 3


if __name__ == "__main__":
    from harness import run

    run(one_input)
