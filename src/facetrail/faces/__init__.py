"""Faces stage: detection, alignment and description, behind one back-end protocol."""

from __future__ import annotations

from facetrail.errors import ConfigError
from facetrail.faces.base import FaceBackend, ModelInfo
from facetrail.settings import Settings

BACKENDS = ("dlib",)

__all__ = ["BACKENDS", "FaceBackend", "ModelInfo", "make_backend"]


def make_backend(settings: Settings) -> FaceBackend:
    match settings.face_backend:
        case "dlib":
            from facetrail.faces.dlib_backend import DlibBackend

            return DlibBackend(
                detector=settings.detector,
                detect_grid=settings.detect_grid,
                hog_grey=settings.hog_grey,
                hog_threshold=settings.hog_threshold,
            )
        case other:
            raise ConfigError(
                f"unknown face back end {other!r}; use one of {', '.join(BACKENDS)}"
            )
