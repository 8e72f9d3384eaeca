"""Faces stage: a detector and an embedder, each behind its own protocol and registry.

A *face model* is a named pair of the two. The ones facetrail ships:

- ``yunet-sface`` (the default for new data directories): YuNet (MIT) finds faces and five
  landmarks; SFace (Apache-2.0) embeds the aligned 112 px chip; cosine similarity.
- ``dlib``: dlib's HOG detector with its 5-point shape predictor; dlib's ResNet descriptor
  (on ONNX Runtime, or dlib itself); Euclidean distance. ``dlib-cnn`` uses dlib's CNN detector.

Models declared by the user (their own ONNX files) are ``UserModel`` records kept in the
store (``facetrail models add``); ``make_model`` builds them from those records.
"""

from __future__ import annotations

import os

from facetrail.errors import ConfigError
from facetrail.faces.base import (
    Detection,
    Detector,
    DetectorInfo,
    Embedder,
    EmbedderInfo,
    ModelInfo,
    model_info,
)
from facetrail.faces.user import UserModel
from facetrail.settings import Settings

MODELS = ("yunet-sface", "dlib", "dlib-cnn")
"""The face models facetrail ships, by name."""
DEFAULT_MODEL = "yunet-sface"
DEFAULT_FLOOR = {"l2": 0.45, "cosine": 0.40}
"""The lowest default threshold of a model, by metric (docs/scores.md)."""
DETECTORS = ("yunet", "dlib-hog", "dlib-cnn")
EMBEDDERS = ("sface", "dlib-resnet")

__all__ = [
    "DEFAULT_FLOOR", "DEFAULT_MODEL", "DETECTORS", "EMBEDDERS", "MODELS", "Detection", "Detector",
    "DetectorInfo", "Embedder", "EmbedderInfo", "FaceModel", "ModelInfo", "UserModel",
    "make_detector",
    "make_embedder", "make_model",
]


class FaceModel:
    """A detector and an embedder whose landmark schemes agree: one embedding space."""

    def __init__(self, name: str, detector: Detector, embedder: Embedder,
                 user: UserModel | None = None) -> None:
        if detector.info.landmarks != embedder.info.landmarks:
            raise ConfigError(
                f"face model {name!r}: the detector gives {detector.info.landmarks!r} landmarks "
                f"but the embedder aligns on {embedder.info.landmarks!r}"
            )
        self.name = name
        self.user = user
        """The declaration of a user-supplied model (None for a shipped one)."""
        self.detector = detector
        self.embedder = embedder

    @property
    def model(self) -> ModelInfo:
        return model_info(self.detector.info, self.embedder.info)

    @property
    def runtime(self) -> str:
        return self.embedder.runtime

    def load(self) -> None:
        self.detector.load()
        self.embedder.load()


def make_model(name: str, settings: Settings, user: UserModel | None = None) -> FaceModel:
    """The face model called ``name``: a shipped one, or ``user`` (a declared one)."""
    if user is not None:
        from facetrail.faces import user as user_models

        return FaceModel(name, user_models.detector(user, settings),
                         user_models.embedder(user, settings), user)
    match name:
        case "yunet-sface":
            return FaceModel(name, make_detector("yunet", settings),
                             make_embedder("sface", settings))
        case "dlib":
            return FaceModel(name, make_detector("dlib-hog", settings),
                             make_embedder("dlib-resnet", settings))
        case "dlib-cnn":
            return FaceModel(name, make_detector("dlib-cnn", settings),
                             make_embedder("dlib-resnet", settings))
        case other:
            raise ConfigError(
                f"unknown face model {other!r}; use one of {', '.join(MODELS)} or a model "
                "declared with 'facetrail models add'"
            )


def make_detector(name: str, settings: Settings) -> Detector:
    match name:
        case "yunet":
            from facetrail.faces.yunet import YuNetDetector

            return YuNetDetector(score_threshold=settings.yunet_threshold,
                                 threads=model_threads(settings),
                                 models_dir=settings.home / "models")
        case "dlib-hog" | "dlib-cnn":
            from facetrail.faces.dlib_backend import DlibDetector

            return DlibDetector(
                detector="cnn" if name == "dlib-cnn" else "hog",
                detect_grid=settings.detect_grid, hog_grey=settings.hog_grey,
                hog_threshold=settings.hog_threshold, models_dir=settings.home / "models",
            )
        case other:
            raise ConfigError(f"unknown face detector {other!r}; use one of {', '.join(DETECTORS)}")


def make_embedder(name: str, settings: Settings) -> Embedder:
    match name:
        case "sface":
            from facetrail.faces.sface import SFaceEmbedder

            return SFaceEmbedder(threads=model_threads(settings),
                                 models_dir=settings.home / "models")
        case "dlib-resnet":
            from facetrail.faces.dlib_backend import DlibEmbedder

            return DlibEmbedder(runtime=settings.descriptor_runtime,
                                threads=model_threads(settings),
                                models_dir=settings.home / "models")
        case other:
            raise ConfigError(f"unknown face embedder {other!r}; use one of {', '.join(EMBEDDERS)}")


def model_threads(settings: Settings) -> int:
    """Threads for the ONNX models in each process: the cores shared among the workers."""
    if settings.descriptor_threads:
        return settings.descriptor_threads
    cores = os.cpu_count() or 1
    return max(1, cores // (settings.workers or cores))
