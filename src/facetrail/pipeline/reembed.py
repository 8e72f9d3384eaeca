"""Moving a gallery to another face model: every stored image, analysed again by it.

Each image of the current model is read back from its recorded locations (inside its
source's registered paths, bytes checked against the sha256, ``sources/readback.py``),
analysed by the target model in worker processes, and stored under the target model with the
image's appearances, one image per transaction. The current model's rows are left as they
are, so searches keep working on it while the move runs and after it, until the user
switches (``facetrail models use``). A killed move resumes where it stopped: an image already
stored for the target is never analysed again. Images whose bytes are no longer readable, or
that the target model cannot analyse, are reported and stay in the current model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from facetrail.errors import FacetrailError
from facetrail.pipeline.analyze import Analyzer, analyze_in_worker, worker_pool
from facetrail.records import ImageAnalysis
from facetrail.settings import Settings
from facetrail.sources.readback import first_readable
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
                 target_model: int) -> None:
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
        after = 0
        roots: dict[str, list[Path]] = {}

        def tick() -> None:
            if progress is not None:
                progress(ReembedProgress(total, already + report.moved, len(report.unreadable),
                                         len(report.failed)))

        tick()
        workers = self.settings.workers or 0
        pool = self._pool(workers)
        try:
            while True:
                todo = self.store.images_to_move(self.from_model, self.target_model, after,
                                                 BATCH)
                if not todo:
                    break
                after = todo[-1][0]
                batch: list[tuple[str, bytes]] = []
                for _, sha, seen in todo:
                    data = first_readable(self.store, sha, seen, roots)
                    if data is None:  # a source may have been given more paths meanwhile
                        roots.clear()
                        data = first_readable(self.store, sha, seen, roots)
                    if data is None:
                        report.unreadable.append(sha)
                        tick()
                    else:
                        batch.append((sha, data))
                try:
                    self._analyse(pool, batch, report, tick, 2 * max(1, workers or 2))
                except BrokenProcessPool:
                    # A worker died (killed, out of memory, a crash in native code): redo the
                    # batch's images that are not stored yet one at a time in a new pool, so
                    # that only an image that kills a worker again is reported.
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = self._isolate(batch, report, tick, workers)
        finally:
            pool.shutdown(cancel_futures=True)
        report.seconds = round(time.perf_counter() - started, 2)
        return report

    def _analyse(self, pool: ProcessPoolExecutor, batch: list[tuple[str, bytes]],
                 report: ReembedReport, tick: Callable[[], None], window: int) -> None:
        in_flight: dict[Future[ImageAnalysis], tuple[str, int]] = {}
        for sha, data in batch:
            while len(in_flight) >= window:
                self._drain(in_flight, report, tick, FIRST_COMPLETED)
            in_flight[pool.submit(analyze_in_worker, data, sha)] = (sha, len(data))
        self._drain(in_flight, report, tick, None)

    def _isolate(self, batch: list[tuple[str, bytes]], report: ReembedReport,
                 tick: Callable[[], None], workers: int) -> ProcessPoolExecutor:
        pool = self._pool(workers)
        for sha, data in batch:
            if self.store.has_image(sha, self.target_model):
                continue
            try:
                self._analyse(pool, [(sha, data)], report, tick, 1)
            except BrokenProcessPool:
                report.failed.append((sha, "the worker analysing it died (a crash in the "
                                           "model, or it was killed), twice"))
                tick()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = self._pool(workers)
        return pool

    def _drain(self, in_flight: dict[Future[ImageAnalysis], tuple[str, int]],
               report: ReembedReport, tick: Callable[[], None],
               until: str | None) -> None:
        while in_flight:
            done, _ = wait(list(in_flight), return_when=until or "ALL_COMPLETED")
            for future in done:
                sha, size = in_flight.pop(future)
                try:
                    analysis = future.result()
                except BrokenProcessPool:
                    raise
                except (FacetrailError, RuntimeError, ValueError, MemoryError) as exc:
                    report.failed.append((sha, f"{type(exc).__name__}: {exc}"))
                else:
                    self.store.add_moved_image(
                        analysis, size, self.target_model, self.target.model.detector.info.name,
                        self.from_model,
                    )
                    report.moved += 1
                    report.faces += len(analysis.faces)
                tick()
            if until is not None:
                return

    def _pool(self, workers: int) -> ProcessPoolExecutor:
        return worker_pool(self.target, workers)
