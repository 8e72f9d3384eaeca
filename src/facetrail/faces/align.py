"""Five-point face alignment: a similarity transform onto a template, and the bilinear warp.

Coordinates are (x, y) in pixels with integer values at pixel centres, OpenCV's convention:
the pixel in column ``c`` and row ``r`` has its centre at ``(c, r)``. A matrix is the 2x3 affine
map from image coordinates to chip coordinates, ``chip = matrix @ (x, y, 1)``, as OpenCV's
``warpAffine`` takes it.

``ARCFACE_112`` is the ArcFace template that OpenCV's ``FaceRecognizerSF.alignCrop`` uses (in
the ``five`` landmark order of ``faces/base.py``); another ArcFace-family model passes its own
template and chip size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facetrail.errors import ConfigError

ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],  # eye on the image's left (the subject's right eye)
        [73.5318, 51.5014],  # the other eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # mouth corner on the image's left
        [70.7299, 92.2041],  # the other mouth corner
    ],
    dtype=np.float64,
)
"""Where the five landmarks of a face land in a 112x112 ArcFace chip, (x, y) pixels."""
ARCFACE_SIZE = 112
TEMPLATES = {"arcface": (ARCFACE_112, ARCFACE_SIZE)}
"""Alignment templates by name: (points, the chip side they are given for)."""


def template(name: str, size: int) -> np.ndarray:
    """The template called ``name`` for a chip of ``size`` pixels, scaled from the size it is
    given for (ArcFace models at 128 px take the 112 px template scaled by 128/112)."""
    if name not in TEMPLATES:
        raise ConfigError(
            f"unknown alignment template {name!r}; use one of {', '.join(TEMPLATES)}"
        )
    points, side = TEMPLATES[name]
    return points * (size / side)


def similarity(
    points: Sequence[Sequence[float]] | np.ndarray, template: np.ndarray = ARCFACE_112
) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation; no reflection) that maps
    ``points`` onto ``template`` with the least sum of squared distances (Umeyama 1991).

    ``points`` and ``template``: (n, 2) arrays of (x, y) pixels in the same order, n >= 2.
    Returns float64 (2, 3), image pixels -> chip pixels. Degenerate points (all equal) give a
    zero scale, which warps every chip pixel to the same image point.
    """
    src = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(template, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need matching (n >= 2, 2) point sets, not {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(covariance)
    # Umeyama's sign correction: the nearest rotation, never a reflection.
    d = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rotation = u @ np.diag(d) @ vt
    variance = float((src_c**2).sum()) / len(src)
    scale = float(s @ d) / variance if variance > 0 else 0.0
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def warp(pixels: np.ndarray, matrix: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """The chip of ``pixels`` under ``matrix``, sampled bilinearly: uint8 (height, width, c).

    ``pixels``: uint8 (rows, columns, c) (RGB for the embedders); ``matrix``: 2x3, image
    pixels -> chip pixels (as ``similarity`` returns); ``size``: the chip's side in pixels, or
    (width, height). Like OpenCV's ``warpAffine(..., INTER_LINEAR, BORDER_CONSTANT)`` a
    neighbour outside the image counts as 0, so the chip fades to black past the image's edge;
    values are rounded to the nearest level.
    """
    width, height = (size, size) if isinstance(size, int) else size
    forward = np.vstack([np.asarray(matrix, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)[:2]
    rows, cols = pixels.shape[:2]
    image = pixels.reshape(rows, cols, -1)
    channels = image.shape[2]
    # Source position of every chip pixel centre, in float32 as OpenCV computes it.
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)[:, None]
    sx = (inverse[0, 0] * xs + (inverse[0, 1] * ys + inverse[0, 2])).astype(np.float32)
    sy = (inverse[1, 0] * xs + (inverse[1, 1] * ys + inverse[1, 2])).astype(np.float32)
    x0f, y0f = np.floor(sx), np.floor(sy)
    fx, fy = (sx - x0f)[..., None], (sy - y0f)[..., None]
    # Positions far outside would overflow int32; anything beyond the image is clipped anyway.
    x0 = np.clip(x0f, -2, cols + 1).astype(np.intp)
    y0 = np.clip(y0f, -2, rows + 1).astype(np.intp)
    flat = image.reshape(rows * cols, channels)
    out = np.zeros((height, width, channels), dtype=np.float32)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        yy = y0 + dy
        y_in = (yy >= 0) & (yy < rows)
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xx = x0 + dx
            inside = y_in & (xx >= 0) & (xx < cols)
            index = np.where(inside, yy * cols + xx, 0)
            out += (wy * wx * inside[..., None]) * flat[index]
    chip = np.rint(out).clip(0, 255).astype(np.uint8)
    return chip if pixels.ndim == 3 else chip[..., 0]
