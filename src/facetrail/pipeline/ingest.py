"""Ingest orchestrator: sources -> (worker processes: imaging -> faces) -> store.

Streaming: at most ``2 x workers`` images are in flight, so memory does not grow with the
collection. Idempotent: images are keyed by sha256, appearances by (source, location, image),
and unchanged locations are skipped before their bytes are read. Each image is committed in
one transaction with its faces and appearances, so a kill at any moment loses at most the
images in flight, which the next run redoes.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

from facetrail.errors import FacetrailError, InputError
from facetrail.imaging import sha256_hex
from facetrail.pipeline.analyze import Analyzer, analyze_in_worker, worker_pool
from facetrail.records import ImageAnalysis, IngestReport, Provenance, SourceFailure
from facetrail.settings import Settings
from facetrail.sources import SourceItem, guess_kind, make_source
from facetrail.sources.base import SeenCheck
from facetrail.store import RunCounts, SourceRow, Store

Progress = Callable[[RunCounts, int | None], None]
"""Called as items are counted, with the expected number of items when it is known."""
Found = list[tuple[Provenance, str | None]]


@dataclass
class _InFlight:
    sha256: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


class Ingest:
    def __init__(self, store: Store, settings: Settings, analyzer: Analyzer) -> None:
        self.store = store
        self.settings = settings
        self.analyzer = analyzer
        self.model_id = store.model_id(analyzer.model.model)

    def run(
        self,
        source: SourceRow,
        paths: Iterable[Path] | None,
        actor: str,
        progress: Progress | None = None,
    ) -> IngestReport:
        targets = list(paths) if paths else [Path(source.uri)]
        started = time.perf_counter()
        run_id = self.store.start_run(source.id, [str(p) for p in targets], actor)
        state = _RunState(self, source, run_id, progress, self._estimate(source, targets))
        status = "failed"
        try:
            state.consume(self._items(source, targets, state.unchanged))
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            self.store.finish_run(run_id, status, state.counts)
        c = state.counts
        return IngestReport(
            run_id=run_id, source=source.name, items=c.items, images_new=c.images_new,
            duplicates=c.duplicates, skipped=c.skipped, faces=c.faces, errors=c.errors,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _estimate(self, source: SourceRow, targets: list[Path]) -> int | None:
        total = 0
        for target in targets:
            count = make_source(self._kind(source, target)).estimate(target)
            if count is None:
                return None
            total += count
        return total

    @staticmethod
    def _kind(source: SourceRow, target: Path) -> str:
        return source.kind if source.kind != "folder" else guess_kind(target)

    def _items(
        self, source: SourceRow, targets: list[Path], seen: SeenCheck
    ) -> Iterator[SourceItem]:
        for target in targets:
            if not target.exists():
                yield SourceFailure(str(target), "not_found", "path does not exist")
                continue
            kind = self._kind(source, target)
            if kind == "warc":
                self.store.clear_archive_errors(source.id, str(target))
            yield from make_source(kind).items(target, seen)

    def workers(self) -> int:
        return self.settings.workers or os.cpu_count() or 1


class _RunState:
    """Book-keeping of one run: what is in flight, what was counted."""

    def __init__(
        self,
        ingest: Ingest,
        source: SourceRow,
        run_id: int,
        progress: Progress | None,
        total: int | None,
    ) -> None:
        self.total = total
        self.ingest = ingest
        self.store = ingest.store
        self.source = source
        self.run_id = run_id
        self.progress = progress
        self.counts = RunCounts()
        self.pending: dict[str, Found] = {}

    def unchanged(self, location: str, fingerprint: str) -> bool:
        """The SeenCheck given to sources: counts an unchanged, already ingested location."""
        if self.store.seen(self.source.id, location, fingerprint):
            self.bump(items=1, skipped=1)
            return True
        return False

    def bump(self, **deltas: int) -> None:
        self.counts = replace(
            self.counts, **{k: getattr(self.counts, k) + v for k, v in deltas.items()}
        )
        if self.progress is not None:
            self.progress(self.counts, self.total)

    def consume(self, items: Iterator[SourceItem]) -> None:
        workers = self.ingest.workers()
        if workers <= 1:
            self._consume_here(items)
        else:
            self._consume_in_pool(items, workers)

    def _consume_here(self, items: Iterator[SourceItem]) -> None:
        for item in items:
            job = self.accept(item)
            if job is not None:
                self.finish(job, functools.partial(self.ingest.analyzer, job.data, job.sha256))

    def _consume_in_pool(self, items: Iterator[SourceItem], workers: int) -> None:
        retry: list[_InFlight] = []
        while True:
            in_flight: dict[Future[ImageAnalysis], _InFlight] = {}
            job: _InFlight | None = None
            try:
                with self._pool(workers) as pool:
                    try:
                        self._isolate(pool, retry)
                        for item in items:
                            job = self.accept(item)
                            if job is not None:
                                future = pool.submit(analyze_in_worker, job.data, job.sha256)
                                in_flight[future] = job
                                job = None
                            while len(in_flight) >= 2 * workers:
                                self.drain(in_flight)
                        while in_flight:
                            self.drain(in_flight)
                    except BaseException:
                        # Interrupted or broken: don't wait for queued images on the way out.
                        pool.shutdown(wait=False, cancel_futures=True)
                        raise
                return
            except BrokenProcessPool:
                # A worker died (killed, out of memory, a crash in native code). Its image is
                # among those in flight: redo them one at a time in a new pool, so that only
                # the image that kills a worker again is recorded as an error.
                retry = retry or [*in_flight.values(), *([job] if job else [])]

    def _pool(self, workers: int) -> ProcessPoolExecutor:
        return worker_pool(self.ingest.analyzer, workers)

    def _isolate(self, pool: ProcessPoolExecutor, retry: list[_InFlight]) -> None:
        while retry:
            job = retry.pop(0)
            try:
                self.finish(job, pool.submit(analyze_in_worker, job.data, job.sha256).result)
            except BrokenProcessPool:
                self._errors(
                    self.pending.pop(job.sha256), "worker_crashed",
                    "the analysing process died on this image (killed, out of memory, or a "
                    "crash in the model); it was retried alone and died again",
                )
                raise

    def drain(self, in_flight: dict[Future[ImageAnalysis], _InFlight]) -> None:
        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in done:
            job = in_flight[future]
            self.finish(job, future.result)
            del in_flight[future]

    def accept(self, item: SourceItem) -> _InFlight | None:
        """Count an item; return a job when its bytes need analysing."""
        if isinstance(item, SourceFailure):
            self.store.record_error(
                self.source.id, self.run_id, item.location, item.code, item.reason
            )
            self.bump(items=1, errors=1)
            return None
        sha = sha256_hex(item.data)
        found = (item.provenance, item.fingerprint)
        if sha in self.pending:
            self.pending[sha].append(found)
            self.bump(items=1, duplicates=1)
            return None
        if self.store.has_image(sha, self.ingest.model_id):
            added = self.store.add_appearances(
                sha, self.ingest.model_id, self.source.id, self.run_id, [found]
            )
            self.bump(items=1, **({"duplicates": 1} if added else {"skipped": 1}))
            return None
        self.pending[sha] = [found]
        self.bump(items=1)
        return _InFlight(sha, item.data)

    def finish(self, job: _InFlight, result: Callable[[], ImageAnalysis]) -> None:
        try:
            analysis = result()
        except BrokenProcessPool:
            raise  # the job stays pending; consume() retries it
        except InputError as exc:
            self._errors(self.pending.pop(job.sha256), exc.code, str(exc))
            return
        except (FacetrailError, RuntimeError, ValueError, MemoryError) as exc:
            # A model failing on one odd image (dlib raises RuntimeError) must not stop a run.
            self._errors(
                self.pending.pop(job.sha256), "analysis_failed", f"{type(exc).__name__}: {exc}"
            )
            return
        found = self.pending.pop(job.sha256)
        self.store.add_image(
            analysis, job.size, self.ingest.model_id,
            self.ingest.analyzer.model.detector.info.name, self.source.id,
            self.run_id, found,
        )
        self.bump(images_new=1, faces=len(analysis.faces))

    def _errors(self, found: Found, code: str, reason: str) -> None:
        for provenance, _ in found:
            self.store.record_error(self.source.id, self.run_id, provenance.location, code, reason)
        self.bump(errors=len(found))
