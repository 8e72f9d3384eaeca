"""Ingest orchestrator: sources -> (workers: reading, imaging -> faces) -> store.

Sources list images cheaply (and skip unchanged locations before any byte is read); workers
read and hash an image where it lies, or take the bytes a source had to read anyway (a web
archive's records). The images a run has, in the store or being analysed, are told by
sha256 before any analysis: a copy of one becomes an appearance of it. Workers are an
executor's (``FACETRAIL_EXECUTOR``), and a worker that dies costs only the image that killed
it (``executors/dispatch.py``).

Streaming: at most ``slots`` tasks are in flight (twice the workers), so memory does not grow
with the collection. Idempotent: images are keyed by sha256, appearances by (source,
location, image). Each image is committed in one transaction with its faces and appearances,
so a kill at any moment loses at most the images in flight, which the next run redoes.

Provenance stays true: a completed run marks gone what it no longer found under its targets
(a file deleted or replaced, a manifest row or archive record that went); what comes back is
current again (docs/provenance.md).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from facetrail.errors import FacetrailError, InputError, PolicyError, StoreError, WorkerLost
from facetrail.executors import Dispatch, Executor, make_executor
from facetrail.imaging import sha256_hex
from facetrail.pipeline.analyze import (
    Analysed,
    AnalyseTask,
    Analyzer,
    AnalyzerWorker,
    Hashed,
    HashTask,
    analysis_executor,
)
from facetrail.pipeline.writing import (
    AnalyseAndStore,
    Stored,
    StoreWrite,
    WriteResult,
    WriteTask,
    WritingWorker,
    check_writes,
)
from facetrail.records import (
    ImageAnalysis,
    ImageRef,
    IngestReport,
    Located,
    Provenance,
    SourceFailure,
)
from facetrail.settings import Settings
from facetrail.sources import SourceItem, guess_kind, make_source
from facetrail.sources.base import SeenCheck
from facetrail.sources.confine import check_targets, source_root
from facetrail.store import RunCounts, RunScope, SourceRow, Store

Suppress = Callable[[ImageAnalysis, int], tuple[ImageAnalysis, int]]
"""Given an image's analysis and the model id, the analysis without the faces that must not
be stored (they match an opt-out, or were erased from the image), and how many those were."""
Progress = Callable[[RunCounts, int | None], None]
"""Called as items are counted, with the expected number of items when it is known."""
FoundAt = tuple[Provenance, str | None]
"""Where a copy of an image was found, and that location's fingerprint."""
TOUCH_BATCH = 512
"""Unchanged locations recorded as found in one transaction."""
EMPTY = {
    "folder": "nothing to ingest: no image file in it (.jpg, .png, .webp, ... looked for "
              "in every folder under it)",
    "manifest": "nothing to ingest: the manifest has no row",
    "warc": "nothing to ingest: no .warc, .warc.gz or .wacz file in it",
}
"""Why a target in which a source found no item at all is an error (``empty_source``)."""


@dataclass(frozen=True, eq=False)
class _Listed:
    """A listed image whose bytes a worker is reading and hashing (one object per item, even
    when two items name the same location)."""

    found: FoundAt
    at: Located
    context: str


Key = str | _Listed
"""What a task is for: the analysis of the image with this sha256, or a listed image."""


class Ingest:
    def __init__(self, store: Store, settings: Settings, analyzer: Analyzer,
                 suppress: Suppress | None = None) -> None:
        self.store = store
        self.settings = settings
        self.analyzer = analyzer
        self.suppress = suppress
        self.model_id = store.model_id(analyzer.model.model)
        check_writes(settings)
        self.direct = settings.ingest_writes == "workers"
        """Workers commit the images they analyse (``pipeline/writing.py``)."""

    def run(
        self,
        source: SourceRow,
        paths: Iterable[Path] | None,
        actor: str,
        progress: Progress | None = None,
    ) -> IngestReport:
        targets = list(paths) if paths else [Path(source.uri)]
        check_targets(source.kind, source.uri, targets)
        for target in targets:
            self._kind(source, target)  # a target of another kind is refused before the run
        started = time.perf_counter()
        lease = self.settings.lease_seconds
        holder = holder_name()
        # A run held by a process of this host that is gone ended now, not when its lease
        # runs out; elsewhere only the lease can tell.
        self.store.interrupt_runs([h for h in self.store.running_holders() if gone(h)])
        stale = datetime.now(UTC) - timedelta(seconds=lease)
        run_id = self.store.start_run(source.id, [str(p) for p in targets], actor, holder,
                                      stale.isoformat(timespec="microseconds")
                                      .replace("+00:00", "Z"))
        state = _RunState(self, source, run_id, progress, self._estimate(source, targets))
        status = "failed"
        with Heartbeat(lambda: self.store.renew_run(run_id, holder), lease / 4):
            try:
                state.consume(self._items(source, targets, state.unchanged))
                state.flush()
                missing = self.store.mark_gone(source.id, run_id, self._scopes(source, targets))
                state.counts = replace(state.counts, gone=missing)
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
            suppressed=c.suppressed, gone=c.gone,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _scopes(self, source: SourceRow, targets: list[Path]) -> list[RunScope]:
        """What the targets cover; one that does not exist covers nothing (an unmounted disk
        is an error of the run, not the loss of everything on it)."""
        return [
            RunScope(str(t.resolve()), listed=self._kind(source, t) != "folder")
            for t in targets if t.exists()
        ]

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
        """How ``target`` is read. A folder source reads a folder or an image as photos, and
        a web archive or a manifest given to it by path as what it is (never as an image);
        a manifest source reads manifests, and a warc source archives or folders of them.
        Any other target is refused (``PolicyError``), before the run starts."""
        if not target.exists():
            return source.kind  # recorded as not found by the run
        kind = guess_kind(target)
        if source.kind == "folder" or kind == source.kind:
            return kind
        if source.kind == "warc" and target.is_dir():
            return "warc"
        raise PolicyError(
            f"{target} is not what the {source.kind} source {source.name!r} reads: it takes "
            + ("manifest files (.csv, .jsonl, .ndjson, .parquet)" if source.kind == "manifest"
               else "web archives (.warc, .warc.gz, .wacz) or folders of them")
            + "; ingest it into a source of its kind (a folder source reads any)"
        )

    def _items(
        self, source: SourceRow, targets: list[Path], seen: SeenCheck
    ) -> Iterator[SourceItem]:
        for target in targets:
            if not target.exists():
                yield SourceFailure(str(target), "not_found", "path does not exist")
                continue
            kind = self._kind(source, target)
            self.store.clear_error(source.id, str(target))  # found again if still empty
            if kind == "warc":
                self.store.clear_archive_errors(source.id, str(target))
            yield from _or_empty(kind, target, seen, source_root(source.kind, source.uri))

    def workers(self) -> int:
        return self.settings.workers or os.cpu_count() or 1

    def executor(self) -> Executor[WriteTask, WriteResult]:
        if self.direct:
            return make_executor(self.settings.executor,
                                 WritingWorker(AnalyzerWorker.like(self.analyzer)),
                                 self.workers(), settings=self.settings)
        return analysis_executor(self.analyzer, self.workers(),  # type: ignore[return-value]
                                 here=True)


class _RunState:
    """Book-keeping of one run: what is being analysed, what was counted."""

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
        self.pending: dict[str, list[FoundAt]] = {}
        """sha256 of each image being analysed -> every copy of it found meanwhile."""
        self.touched: list[tuple[str, str, str | None]] = []
        """Unchanged locations found since the last ``flush``: (location, fingerprint,
        listing)."""

    def unchanged(self, provenance: Provenance, fingerprint: str) -> bool:
        """The SeenCheck given to sources: counts an unchanged, already ingested location."""
        if self.store.seen(self.source.id, provenance.location, fingerprint):
            self.touched.append((provenance.location, fingerprint, provenance.listing))
            if len(self.touched) >= TOUCH_BATCH:
                self.flush()
            self.bump(items=1, skipped=1)
            return True
        return False

    def flush(self) -> None:
        """Record the unchanged locations found as found by this run."""
        self.store.touch(self.source.id, self.run_id, self.touched)
        self.touched = []

    def bump(self, **deltas: int) -> None:
        self.counts = replace(
            self.counts, **{k: getattr(self.counts, k) + v for k, v in deltas.items()}
        )
        if self.progress is not None:
            self.progress(self.counts, self.total)

    def consume(self, items: Iterator[SourceItem]) -> None:
        dispatch: Dispatch[Key, WriteTask, WriteResult] = Dispatch(self.ingest.executor)
        with dispatch:
            for key, outcome in dispatch.run(self.jobs(items)):
                if isinstance(key, _Listed):
                    self.hashed(key, outcome, dispatch)
                else:
                    self.finish(key, outcome)

    def jobs(self, items: Iterable[SourceItem]) -> Iterator[tuple[Key, WriteTask]]:
        for item in items:
            job = self.accept(item)
            if job is not None:
                yield job

    def accept(self, item: SourceItem) -> tuple[Key, WriteTask] | None:
        """Count an item; return a job when it needs a worker: a hash, or an analysis."""
        if isinstance(item, SourceFailure):
            self.store.record_error(
                self.source.id, self.run_id, item.location, item.code, item.reason
            )
            self.bump(items=1, errors=1)
            return None
        if isinstance(item, ImageRef):
            self.bump(items=1)
            found = (item.provenance, item.fingerprint)
            return _Listed(found, item.at, item.context), HashTask(item.at)
        sha = sha256_hex(item.data)
        if self.known(sha, (item.provenance, item.fingerprint), items=1):
            return None
        self.bump(items=1)
        return sha, self.analyse(AnalyseTask(sha, data=item.data))

    def analyse(self, task: AnalyseTask) -> WriteTask:
        """The task that analyses an image: with the store write, when workers write."""
        if not self.ingest.direct:
            return task
        first = self.pending[task.sha256][0]
        return AnalyseAndStore(task, StoreWrite(
            self.source.id, self.run_id, self.ingest.model_id,
            self.ingest.analyzer.model.detector.info.name, first))

    def hashed(self, listed: _Listed, outcome: WriteResult | Exception,
               dispatch: Dispatch[Key, WriteTask, WriteResult]) -> None:
        if isinstance(outcome, Exception):
            self.failed([listed.found], outcome, listed.context)
            return
        assert isinstance(outcome, Hashed)
        if not self.known(outcome.sha256, listed.found):
            dispatch.add(outcome.sha256,
                         self.analyse(AnalyseTask(outcome.sha256, at=(listed.at,))))

    def known(self, sha: str, found: FoundAt, **counted: int) -> bool:
        """Whether the image is stored or being analysed already: if so, ``found`` is recorded
        as an appearance of it (and counted, with ``counted``); if not, ``found`` is its first
        copy, and the caller has it analysed."""
        if sha in self.pending:
            self.pending[sha].append(found)
            self.bump(duplicates=1, **counted)
            return True
        if self.store.erased_image(sha):  # erased by name: never ingested again
            self.bump(suppressed=1, **counted)
            return True
        if self.store.has_image(sha, self.ingest.model_id):
            added = self.store.add_appearances(
                sha, self.ingest.model_id, self.source.id, self.run_id, [found]
            )
            self.bump(**({"duplicates": 1} if added else {"skipped": 1}), **counted)
            return True
        self.pending[sha] = [found]
        return False

    def finish(self, sha: str, outcome: WriteResult | Exception) -> None:
        found = self.pending.pop(sha)
        if isinstance(outcome, Exception):
            self.failed(found, outcome)
            return
        if isinstance(outcome, Stored):  # a worker committed it with its first copy
            if found[1:]:
                self.store.add_appearances(sha, self.ingest.model_id, self.source.id,
                                           self.run_id, found[1:])
            if outcome.already:
                self.bump(**({"duplicates": 1} if outcome.appearance_added else {"skipped": 1}))
            else:
                self.bump(images_new=1, faces=outcome.faces, suppressed=outcome.suppressed)
            return
        assert isinstance(outcome, Analysed)
        analysis, suppressed = outcome.analysis, 0
        if self.ingest.suppress is not None:
            analysis, suppressed = self.ingest.suppress(analysis, self.ingest.model_id)
        if self.store.add_image(
            analysis, outcome.size, self.ingest.model_id,
            self.ingest.analyzer.model.detector.info.name, self.source.id,
            self.run_id, found,
        ):
            self.bump(images_new=1, faces=len(analysis.faces), suppressed=suppressed)
        else:  # a run of another source stored the same bytes while this one analysed them
            self.bump(duplicates=1)

    def failed(self, found: list[FoundAt], exc: Exception, context: str = "") -> None:
        """Record why the copies ``found`` of an image could not be ingested."""
        if isinstance(exc, WorkerLost):
            self._errors(
                found, "worker_crashed",
                "the analysing process died on this image (killed, out of memory, or a crash "
                "in the model); it was retried alone and died again",
            )
        elif isinstance(exc, StoreError):
            raise exc  # a worker that writes lost the store: the run stops, as the driver's would
        elif isinstance(exc, InputError):
            self._errors(found, exc.code, f"{context}{exc}")
        elif isinstance(exc, FacetrailError | RuntimeError | ValueError | MemoryError):
            # A model failing on one odd image (dlib raises RuntimeError) must not stop a run.
            self._errors(found, "analysis_failed", f"{type(exc).__name__}: {exc}")
        else:
            raise exc

    def _errors(self, found: list[FoundAt], code: str, reason: str) -> None:
        for provenance, _ in found:
            self.store.record_error(self.source.id, self.run_id, provenance.location, code, reason)
        self.bump(errors=len(found))


def _or_empty(kind: str, target: Path, seen: SeenCheck, root: Path) -> Iterator[SourceItem]:
    """The items of ``target``, or an ``empty_source`` failure if it has none at all (not
    even unchanged ones, which the source skips before listing them): said plainly, never
    "0 items, 0 errors"."""
    found = 0

    def counted(provenance: Provenance, fingerprint: str) -> bool:
        nonlocal found
        found += 1
        return seen(provenance, fingerprint)

    for item in make_source(kind).items(target, counted, root):
        found += 1
        yield item
    if not found:
        yield SourceFailure(str(target), "empty_source", EMPTY[kind])


def holder_name() -> str:
    """Who holds a run: this host and process, and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def gone(holder: str) -> bool:
    """Whether ``holder`` is a process of this host that no longer exists."""
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Heartbeat:
    """Calls ``renew`` every ``every`` seconds on a thread of its own while in its block, so
    that a lease stays held however long one image takes."""

    def __init__(self, renew: Callable[[], object], every: float) -> None:
        self.renew = renew
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="facetrail-lease",
                                        daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.renew()
            except FacetrailError:  # a store that is briefly unreachable: try again later
                continue
