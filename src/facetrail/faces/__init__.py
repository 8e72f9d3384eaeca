"""Faces stage: detection, alignment and description, behind one back-end protocol."""

from __future__ import annotations

import os

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
                runtime=settings.descriptor_runtime,
                threads=descriptor_threads(settings),
                models_dir=settings.home / "models",
            )
        case other:
            raise ConfigError(
                f"unknown face back end {other!r}; use one of {', '.join(BACKENDS)}"
            )


def descriptor_threads(settings: Settings) -> int:
    """Threads for the descriptor in each process: the cores shared among the workers."""
    if settings.descriptor_threads:
        return settings.descriptor_threads
    cores = os.cpu_count() or 1
    return max(1, cores // (settings.workers or cores))
