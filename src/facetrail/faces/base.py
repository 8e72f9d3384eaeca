"""The face back-end protocol: detect, align and describe every face in an image."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Protocol

from facetrail.imaging import DecodedImage
from facetrail.records import DetectedFace


@dataclass(frozen=True)
class ModelInfo:
    """Identity of the embedding space. Vectors are comparable only within one ``key``."""

    name: str
    version: str
    """Content hash (first 16 hex digits of sha256) of the weights file."""
    dim: int
    alignment: str
    normalisation: str
    metric: str

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}/{self.alignment}/{self.normalisation}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class FaceBackend(Protocol):
    """A back end loads lazily: ``analyze`` calls ``load`` on first use."""

    detector: str
    runtime: str
    """What computes the embeddings, e.g. 'onnx' or 'dlib'; it does not change the vectors."""

    @property
    def model(self) -> ModelInfo: ...

    def load(self) -> None: ...

    def analyze(self, image: DecodedImage) -> tuple[DetectedFace, ...]:
        """Every face found, largest first, each with its embedding."""
        ...
