"""The faces stage's two back-end protocols, and the identity of an embedding space.

    Detector:  decoded image  -> Detection (box, five landmarks, score), any order
    Embedder:  image + Detection -> aligned chip -> vector (unit length for a cosine metric)

The analyzer (``pipeline/analyze.py``) composes one of each, and owns quality scoring and the
order of faces. Both load lazily: ``load`` runs on first use, never at construction or import.

Landmark schemes (``Detection.landmarks``, five ``(x, y)`` points in image pixels):

- ``five``: the 5-point scheme of YuNet, SCRFD and the ArcFace template: the eye on the
  image's left (the subject's right eye), the other eye, the nose tip, the mouth corner on the
  image's left, the other mouth corner.
- ``dlib5``: dlib's 5-point shape predictor: right eye outer, right eye inner, left eye outer,
  left eye inner, nose base (right/left as seen from the subject).

An embedder declares the scheme its alignment needs, and the registry refuses a pair that
does not match.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from facetrail.imaging import DecodedImage
from facetrail.records import Point

METRICS = ("l2", "cosine")
SCORE_MEANING = {
    "l2": "1 - Euclidean distance between the descriptors",
    "cosine": "cosine similarity of the face vectors",
}
"""What a score is, in words, by metric (docs/scores.md)."""
LANDMARK_SCHEMES = ("five", "dlib5")


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]
    """(x, y, w, h) in pixels of the image given to ``detect``; may reach past its edges."""
    landmarks: tuple[Point, ...]
    """Five points in the detector's ``landmarks`` scheme."""
    score: float
    """The detector's confidence (YuNet: 0..1; dlib HOG: the SVM margin)."""


@dataclass(frozen=True)
class DetectorInfo:
    name: str
    """e.g. 'yunet' or 'dlib-hog'."""
    version: str
    """First 16 hex digits of the weights' sha256, or a fixed tag for built-in detectors."""
    landmarks: str
    """The landmark scheme of its detections (see the module docstring)."""
    probability: bool = False
    """Its scores are confidences in 0..1 (YuNet), not margins (dlib HOG)."""

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


class Detector(Protocol):
    @property
    def info(self) -> DetectorInfo: ...

    def load(self) -> None: ...

    def detect(self, image: DecodedImage) -> list[Detection]:
        """Every face found in ``image``; ``detect`` calls ``load`` on first use."""
        ...


@dataclass(frozen=True)
class ModelInfo:
    """Identity of an embedding space. Vectors are comparable only within one ``key``.

    The key names the detector as well as the embedder: another detector finds other faces
    and places other landmarks, so a gallery must be re-ingested (``facetrail reembed``) to
    move to it."""

    name: str
    version: str
    """Content hash (first 16 hex digits of sha256) of the weights file."""
    dim: int
    alignment: str
    normalisation: str
    metric: str
    """'l2' (score = 1 - Euclidean distance) or 'cosine' (vectors are unit length, score =
    cosine similarity = 1 - d^2 / 2 for their Euclidean distance d)."""
    detector: str = ""
    """``DetectorInfo.key`` of the detector whose faces were embedded."""

    @property
    def key(self) -> str:
        return f"{self.detector}+{self.name}@{self.version}/{self.alignment}/{self.normalisation}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def score(self, distance: float) -> float:
        """The score of a Euclidean distance between two vectors of this space (higher is
        more alike, 1 for identical vectors), rounded to 4 places."""
        return round(float(score_of(distance, self.metric)), 4)


def score_of(distance: float | np.ndarray, metric: str) -> float | np.ndarray:
    """Score of a Euclidean distance: ``1 - d`` for 'l2', the cosine ``1 - d^2/2`` for 'cosine'
    (exact for unit vectors)."""
    if metric == "cosine":
        return 1.0 - distance * distance / 2.0
    return 1.0 - distance


@dataclass(frozen=True)
class EmbedderInfo:
    name: str
    version: str
    """First 16 hex digits of the weights' sha256."""
    dim: int
    alignment: str
    """e.g. 'arcface5-112' or 'dlib-5pt-chip150-pad0.25'."""
    normalisation: str
    """What is done to the model's output: 'none' or 'l2' (unit length)."""
    metric: str
    landmarks: str
    """The landmark scheme the alignment needs."""


class Embedder(Protocol):
    runtime: str
    """What computes the vectors, e.g. 'onnx' or 'dlib' (it does not change the space)."""

    @property
    def info(self) -> EmbedderInfo: ...

    def load(self) -> None: ...

    def align(self, pixels: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        """The aligned uint8 RGB chip of each detection, in order, as ``embed`` takes them.
        ``pixels``: uint8 (height, width, 3) RGB."""
        ...

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """float32 (len(chips), dim); unit length when the metric is 'cosine'."""
        ...


def model_info(detector: DetectorInfo, embedder: EmbedderInfo) -> ModelInfo:
    return ModelInfo(
        name=embedder.name, version=embedder.version, dim=embedder.dim,
        alignment=embedder.alignment, normalisation=embedder.normalisation,
        metric=embedder.metric, detector=detector.key,
    )
