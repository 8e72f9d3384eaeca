"""Detection geometry: at what scale the detector looks at an image.

The HOG detector's window is 80 px, so at a scale ``s`` it finds faces down to ``80 / s`` px
of the original. facetrail scans a grid whose longest side is at most ``detect_grid``:

- images up to ``grid / 2`` are upsampled x2, so faces down to 40 px are found;
- larger images are first downscaled so that the scanned grid is exactly ``grid`` px
  (faces down to ``80 * side / grid`` px are found).

With the default grid of 3200 px an image up to 1600 px finds 40 px faces, like
face_recognition's upsample=1 at full resolution, and a 4000 px photo finds faces down to
100 px at a sixth of the full-resolution cost. Boxes are mapped back to original pixels.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectionPlan:
    scale: float
    """Resize factor applied to the image before detection (<= 1)."""
    upsample: int
    """Number of x2 upsamplings the detector performs on the resized image (0 or 1)."""

    @property
    def effective_scale(self) -> float:
        return self.scale * (2**self.upsample)

    @property
    def min_face_px(self) -> float:
        """Smallest face, in original pixels, this plan can find."""
        return 80.0 / self.effective_scale


def plan(width: int, height: int, grid: int) -> DetectionPlan:
    side = max(width, height)
    if 2 * side <= grid:
        return DetectionPlan(scale=1.0, upsample=1)
    if side <= grid:
        return DetectionPlan(scale=grid / (2 * side), upsample=1)
    return DetectionPlan(scale=grid / side, upsample=0)
