"""One image through the imaging and faces stages, in whichever process runs it.

The analyzer composes the face model's detector and embedder, and owns what is common to
every model: clipping boxes to the image, quality scoring and the order of faces. Its tasks
(``HashTask``, ``AnalyseTask``) are what ingest and reembed send to an executor's workers,
each of which holds an analyzer made from an ``AnalyzerWorker`` recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

from facetrail import imaging
from facetrail.executors import Executor, make_executor
from facetrail.faces import DEFAULT_MODEL, FaceModel, UserModel, make_model
from facetrail.faces.base import Detection
from facetrail.imaging import DecodedImage
from facetrail.records import Box, DetectedFace, ImageAnalysis, Located
from facetrail.settings import Settings
from facetrail.sources.readback import read_image

SHARPNESS_REFERENCE = 100.0
"""Laplacian variance of an aligned chip above which a face counts as fully sharp."""
SIZE_REFERENCE = 80.0
"""Face box side, in pixels, above which a face counts as full size."""


@dataclass(frozen=True)
class HashTask:
    """Read an image where it lies and hash it: the driver then tells a new image from one it
    has or is analysing already, before any analysis."""

    at: Located


@dataclass(frozen=True)
class Hashed:
    sha256: str
    size: int
    """Bytes."""


@dataclass(frozen=True)
class AnalyseTask:
    """Analyse one image: ``data``, or else the bytes at the first of ``at`` that hash to
    ``sha256`` (an ``UnreadableError`` if none does)."""

    sha256: str
    data: bytes | None = None
    at: tuple[Located, ...] = ()


@dataclass(frozen=True)
class Analysed:
    analysis: ImageAnalysis
    size: int
    """Bytes."""


Task = HashTask | AnalyseTask
Result = Hashed | Analysed


class Analyzer:
    def __init__(self, settings: Settings, model: FaceModel | None = None) -> None:
        self.settings = settings
        self.model = model or make_model(settings.face_model or DEFAULT_MODEL, settings)

    def __call__(self, data: bytes, sha256: str,
                 embed: Collection[int] | None = None) -> ImageAnalysis:
        """Decode and find faces; raises an ``InputError`` for anything unusable. ``embed``:
        see ``faces``."""
        image = imaging.decode(data, self.settings, sha256=sha256)
        return ImageAnalysis(sha256, image.width, image.height, image.format,
                             self.faces(image, embed))

    def run(self, task: Task) -> Result:
        """One task, in a worker (or here): read the bytes if the task does not carry them."""
        if isinstance(task, HashTask):
            data = read_image((task.at,))
            return Hashed(imaging.sha256_hex(data), len(data))
        data = task.data if task.data is not None else read_image(task.at, task.sha256)
        return Analysed(self(data, task.sha256), len(data))

    def faces(self, image: DecodedImage,
              embed: Collection[int] | None = None) -> tuple[DetectedFace, ...]:
        """Every face found of at least ``min_face_px`` (its box's shorter side, inside the
        image), most prominent first, each with its embedding; with ``embed``, only the faces
        at those positions are embedded (a probe's searched faces), the others carry an empty
        vector.

        Prominence is the box's area, weighted by the detector's confidence where its scores
        are confidences (YuNet): a face cut off by the photo's edge, or turned away, scores
        lower than a whole face of the same area. Ties go by position."""
        minimum = self.settings.min_face_px
        found = [
            (d, box) for d in self.model.detector.detect(image)
            if min((box := clip_box(d, image.width, image.height))[2:]) >= minimum
        ]
        weighted = self.model.detector.info.probability
        found.sort(key=lambda f: (-f[1][2] * f[1][3] * (f[0].score if weighted else 1.0), f[1]))
        if not found:
            return ()
        embedder = self.model.embedder
        chips = embedder.align(image.pixels, [d for d, _ in found])
        wanted = range(len(found)) if embed is None else sorted(set(embed) & set(range(len(found))))
        vectors = dict(zip(wanted, embedder.embed([chips[i] for i in wanted]), strict=True))
        empty = np.zeros(0, dtype=np.float32)
        faces = []
        for i, ((d, box), chip) in enumerate(zip(found, chips, strict=True)):
            sharp = sharpness(chip)
            quality = min(1.0, min(box[2], box[3]) / SIZE_REFERENCE) * min(
                1.0, sharp / SHARPNESS_REFERENCE
            )
            faces.append(
                DetectedFace(
                    box=box,
                    landmarks=tuple((round(x, 2), round(y, 2)) for x, y in d.landmarks),
                    det_score=round(float(d.score), 4),
                    quality=round(quality, 4),
                    sharpness=round(sharp, 2),
                    embedding=np.asarray(vectors[i], dtype=np.float32) if i in vectors else empty,
                    runtime=embedder.runtime,
                )
            )
        return tuple(faces)


@dataclass(frozen=True)
class AnalyzerWorker:
    """The recipe of an analysing worker: an Analyzer with these settings and face model,
    whose model loads once, when the worker starts."""

    settings_json: str
    model_name: str
    user: UserModel | None = None

    @classmethod
    def like(cls, analyzer: Analyzer) -> AnalyzerWorker:
        return cls(analyzer.settings.model_dump_json(), analyzer.model.name, analyzer.model.user)

    def start(self) -> Callable[[Task], Result]:
        return self.analyzer().run

    def analyzer(self) -> Analyzer:
        """The analyzer, its model loaded."""
        settings = Settings.model_validate_json(self.settings_json)
        analyzer = Analyzer(settings, make_model(self.model_name, settings, self.user))
        analyzer.model.load()
        return analyzer


def clip_box(d: Detection, width: int, height: int) -> Box:
    """A detection's box as whole pixels inside the image: (x, y, w, h), at least 1 x 1."""
    x, y, w, h = d.box
    left, top = max(0, round(x)), max(0, round(y))
    right, bottom = min(width, round(x + w)), min(height, round(y + h))
    return (left, top, max(1, right - left), max(1, bottom - top))


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


def analysis_executor(analyzer: Analyzer, workers: int, *,
                      here: bool) -> Executor[Task, Result]:
    """Where tasks for ``analyzer`` run: the executor the settings name, with ``workers``
    workers (0: one per core), each holding an analyzer like it (its settings and face model).
    With ``here``, a one-worker local executor is this process, using ``analyzer`` itself."""
    return make_executor(analyzer.settings.executor, AnalyzerWorker.like(analyzer), workers,
                         here=analyzer.run if here else None, settings=analyzer.settings)
