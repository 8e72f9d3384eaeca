"""Moving a gallery to another face model: every stored image, analysed again by it.

Each image of the current model is read back by a worker from its recorded locations (inside
its source's registered paths, bytes checked against the sha256, ``sources/readback.py``),
analysed there by the target model, and stored under the target model with the
image's appearances, one image per transaction. The current model's rows are left as they
are, so searches keep working on it while the move runs and after it, until the user
switches (``facetrail models use``). A killed move resumes where it stopped: an image already
stored for the target is never analysed again. Images whose bytes are no longer readable, or
that the target model cannot analyse, are reported and stay in the current model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from facetrail.errors import FacetrailError, UnreadableError, WorkerLost
from facetrail.executors import Dispatch, Executor
from facetrail.pipeline.analyze import (
    Analysed,
    AnalyseTask,
    Analyzer,
    Result,
    Task,
    analysis_executor,
)
from facetrail.pipeline.ingest import Suppress
from facetrail.settings import Settings
from facetrail.sources.readback import locate, source_roots
from facetrail.store.base import Store

BATCH = 64
"""Images fetched from the store per query."""


@dataclass(frozen=True)
class ReembedProgress:
    total: int
    """Images of the current model."""
    done: int
    """Images the target model holds (including those of earlier, interrupted runs)."""
    unreadable: int
    failed: int


@dataclass
class ReembedReport:
    target: str
    target_key: str
    total: int
    already: int
    """Images the target held before this run (an interrupted move, resumed)."""
    moved: int
    faces: int
    unreadable: list[str] = field(default_factory=list)
    """sha256 of images no appearance of which still holds their bytes."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(sha256, reason) of images the target model could not analyse."""
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return self.already + self.moved == self.total

    @property
    def images_per_second(self) -> float:
        return self.moved / self.seconds if self.seconds else 0.0


class Reembed:
    def __init__(self, store: Store, settings: Settings, from_model: int, target: Analyzer,
                 target_model: int, suppress: Suppress | None = None) -> None:
        self.suppress = suppress
        self.store = store
        self.settings = settings
        self.from_model = from_model
        self.target = target
        self.target_model = target_model

    def run(self, progress: Callable[[ReembedProgress], None] | None = None) -> ReembedReport:
        started = time.perf_counter()
        total = self.store.image_count(self.from_model)
        already = total - self.store.count_to_move(self.from_model, self.target_model)
        report = ReembedReport(self.target.model.name, self.target.model.model.key, total,
                               already, 0, 0)

        def tick() -> None:
            if progress is not None:
                progress(ReembedProgress(total, already + report.moved, len(report.unreadable),
                                         len(report.failed)))

        tick()
        dispatch: Dispatch[str, Task, Result] = Dispatch(self._executor)
        with dispatch:
            for sha, outcome in dispatch.run(self._jobs()):
                if isinstance(outcome, Analysed):
                    analysis = outcome.analysis
                    if self.suppress is not None:  # faces erased from the image stay erased
                        analysis, _ = self.suppress(analysis, self.target_model)
                    self.store.add_moved_image(
                        analysis, outcome.size, self.target_model,
                        self.target.model.detector.info.name, self.from_model,
                    )
                    report.moved += 1
                    report.faces += len(analysis.faces)
                elif isinstance(outcome, UnreadableError):
                    report.unreadable.append(sha)
                elif isinstance(outcome, WorkerLost):
                    report.failed.append((sha, "the worker analysing it died (a crash in the "
                                               "model, or it was killed), twice"))
                elif isinstance(outcome, FacetrailError | RuntimeError | ValueError | MemoryError):
                    report.failed.append((sha, f"{type(outcome).__name__}: {outcome}"))
                elif isinstance(outcome, Exception):
                    raise outcome
                tick()
        report.seconds = round(time.perf_counter() - started, 2)
        return report

    def _jobs(self) -> Iterator[tuple[str, AnalyseTask]]:
        """Every image still to move, as a task that reads it where the store says it was
        found, inside its source's folder."""
        after = 0
        while todo := self.store.images_to_move(self.from_model, self.target_model, after,
                                                BATCH):
            after = todo[-1][0]
            roots: dict[str, tuple[str, ...]] = {}  # per batch: a source may gain paths
            for _, sha, seen in todo:
                places = []
                for a in seen:
                    if a.source not in roots:
                        roots[a.source] = tuple(source_roots(self.store, a.source))
                    if (place := locate(a.location, roots[a.source])) is not None:
                        places.append(place)
                yield sha, AnalyseTask(sha, at=tuple(places))

    def _executor(self) -> Executor[Task, Result]:
        return analysis_executor(self.target, self.settings.workers, here=False)
