"""One image through the imaging and faces stages, in whichever process runs it.

The analyzer composes the face model's detector and embedder, and owns what is common to
every model: clipping boxes to the image, quality scoring and the order of faces.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

from facetrail import imaging
from facetrail.faces import DEFAULT_MODEL, FaceModel, UserModel, make_model
from facetrail.faces.base import Detection
from facetrail.imaging import DecodedImage
from facetrail.records import Box, DetectedFace, ImageAnalysis
from facetrail.settings import Settings

SHARPNESS_REFERENCE = 100.0
"""Laplacian variance of an aligned chip above which a face counts as fully sharp."""
SIZE_REFERENCE = 80.0
"""Face box side, in pixels, above which a face counts as full size."""


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


# Each worker process holds one Analyzer, built once by the pool's initializer, so the models
# load once per process. It lives only in worker processes, never in the caller's.
_worker_analyzer: Analyzer | None = None


def init_worker(settings_json: str, model_name: str, user: UserModel | None = None,
                parent: int | None = None) -> None:
    global _worker_analyzer
    if parent is not None:
        threading.Thread(target=_exit_without, args=(parent,), name="facetrail-parent",
                         daemon=True).start()
    settings = Settings.model_validate_json(settings_json)
    analyzer = Analyzer(settings, make_model(model_name, settings, user))
    analyzer.model.load()
    _worker_analyzer = analyzer


def _exit_without(parent: int) -> None:
    """End this worker once its parent is gone. A parent killed, or ended by a signal while
    its pool was still shutting down (a server stopped during an ingest job), leaves its
    workers waiting for work forever otherwise."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def worker_pool(analyzer: Analyzer, workers: int) -> ProcessPoolExecutor:
    """``workers`` spawned processes (0: one per core), each holding an Analyzer like
    ``analyzer`` (its settings and face model), for ``analyze_in_worker``."""
    return ProcessPoolExecutor(
        max_workers=workers or None,
        mp_context=get_context("spawn"),
        initializer=init_worker,
        initargs=(analyzer.settings.model_dump_json(), analyzer.model.name, analyzer.model.user,
                  os.getpid()),
    )


def analyze_in_worker(data: bytes, sha256: str) -> ImageAnalysis:
    assert _worker_analyzer is not None, "init_worker did not run in this process"
    return _worker_analyzer(data, sha256)
