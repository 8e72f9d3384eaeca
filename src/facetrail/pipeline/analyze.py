"""One image through the imaging and faces stages, in whichever process runs it."""

from __future__ import annotations

from facetrail import imaging
from facetrail.faces import FaceBackend, make_backend
from facetrail.records import ImageAnalysis
from facetrail.settings import Settings


class Analyzer:
    def __init__(self, settings: Settings, backend: FaceBackend | None = None) -> None:
        self.settings = settings
        self.backend = backend or make_backend(settings)

    def __call__(self, data: bytes, sha256: str) -> ImageAnalysis:
        """Decode and find faces; raises an ``InputError`` for anything unusable."""
        image = imaging.decode(data, self.settings, sha256=sha256)
        faces = self.backend.analyze(image)
        return ImageAnalysis(sha256, image.width, image.height, image.format, faces)


# Each worker process holds one Analyzer, built once by the pool's initializer, so the models
# load once per process. It lives only in worker processes, never in the caller's.
_worker_analyzer: Analyzer | None = None


def init_worker(settings_json: str) -> None:
    global _worker_analyzer
    analyzer = Analyzer(Settings.model_validate_json(settings_json))
    analyzer.backend.load()
    _worker_analyzer = analyzer


def analyze_in_worker(data: bytes, sha256: str) -> ImageAnalysis:
    assert _worker_analyzer is not None, "init_worker did not run in this process"
    return _worker_analyzer(data, sha256)
