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
from multiprocessing import get_context
from pathlib import Path

from facetrail.errors import FacetrailError, InputError
from facetrail.imaging import sha256_hex
from facetrail.pipeline.analyze import Analyzer, analyze_in_worker, init_worker
from facetrail.records import ImageAnalysis, ImageRecord, IngestReport, Provenance, SourceFailure
from facetrail.settings import Settings
from facetrail.sources import SourceItem, guess_kind, make_source
from facetrail.store import RunCounts, SourceRow, Store

Progress = Callable[[RunCounts], None]
Found = list[tuple[Provenance, str | None]]


@dataclass
class _InFlight:
    sha256: str
    size: int


class Ingest:
    def __init__(self, store: Store, settings: Settings, analyzer: Analyzer) -> None:
        self.store = store
        self.settings = settings
        self.analyzer = analyzer
        self.model_id = store.model_id(analyzer.backend.model)

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
        state = _RunState(self, source, run_id, progress)
        status = "failed"
        try:
            state.consume(self._items(source, targets))
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

    def _items(self, source: SourceRow, targets: list[Path]) -> Iterator[SourceItem]:
        def seen(location: str, fingerprint: str) -> bool:
            return self.store.seen(source.id, location, fingerprint)

        for target in targets:
            if not target.exists():
                yield SourceFailure(str(target), "not_found", "path does not exist")
                continue
            kind = source.kind if source.kind != "folder" else guess_kind(target)
            yield from make_source(kind).items(target, seen)

    def workers(self) -> int:
        return self.settings.workers or os.cpu_count() or 1


class _RunState:
    """Book-keeping of one run: what is in flight, what was counted."""

    def __init__(
        self, ingest: Ingest, source: SourceRow, run_id: int, progress: Progress | None
    ) -> None:
        self.ingest = ingest
        self.store = ingest.store
        self.source = source
        self.run_id = run_id
        self.progress = progress
        self.counts = RunCounts()
        self.pending: dict[str, Found] = {}

    def bump(self, **deltas: int) -> None:
        self.counts = replace(
            self.counts, **{k: getattr(self.counts, k) + v for k, v in deltas.items()}
        )
        if self.progress is not None:
            self.progress(self.counts)

    def consume(self, items: Iterator[SourceItem]) -> None:
        workers = self.ingest.workers()
        if workers <= 1:
            for item in items:
                job = self.accept(item)
                if job is not None:
                    assert isinstance(item, ImageRecord)
                    self.finish(job, functools.partial(self.ingest.analyzer, item.data, job.sha256))
            return
        settings_json = self.ingest.settings.model_dump_json()
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("spawn"),
            initializer=init_worker,
            initargs=(settings_json,),
        ) as pool:
            in_flight: dict[Future[ImageAnalysis], _InFlight] = {}
            try:
                for item in items:
                    job = self.accept(item)
                    if job is None:
                        continue
                    assert isinstance(item, ImageRecord)
                    in_flight[pool.submit(analyze_in_worker, item.data, job.sha256)] = job
                    while len(in_flight) >= 2 * workers:
                        self.drain(in_flight)
                while in_flight:
                    self.drain(in_flight)
            except BaseException:
                for future in in_flight:
                    future.cancel()
                raise

    def drain(self, in_flight: dict[Future[ImageAnalysis], _InFlight]) -> None:
        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        for future in done:
            job = in_flight.pop(future)
            self.finish(job, future.result)

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
        return _InFlight(sha, len(item.data))

    def finish(self, job: _InFlight, result: Callable[[], ImageAnalysis]) -> None:
        found = self.pending.pop(job.sha256)
        try:
            analysis = result()
        except BrokenProcessPool:
            raise
        except InputError as exc:
            self._errors(found, exc.code, str(exc))
            return
        except (FacetrailError, RuntimeError, ValueError, MemoryError) as exc:
            # A model failing on one odd image (dlib raises RuntimeError) must not stop a run.
            self._errors(found, "analysis_failed", f"{type(exc).__name__}: {exc}")
            return
        model = self.ingest.analyzer.backend
        self.store.add_image(
            analysis, job.size, self.ingest.model_id, model.detector, self.source.id,
            self.run_id, found,
        )
        self.bump(images_new=1, faces=len(analysis.faces))

    def _errors(self, found: Found, code: str, reason: str) -> None:
        for provenance, _ in found:
            self.store.record_error(self.source.id, self.run_id, provenance.location, code, reason)
        self.bump(errors=len(found))
