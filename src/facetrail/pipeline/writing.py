"""Workers that write what they analyse to the store themselves
(``FACETRAIL_INGEST_WRITES=workers``; a PostgreSQL store, which many processes and hosts
write at once).

The driver still lists items, tells images apart by sha256 and keeps the run's books; a worker
given an ``AnalyseAndStore`` task analyses the image, leaves out what must not be stored
(``suppression``), and commits the image, its faces and its first appearance in one
transaction of its own connection. What goes back to the driver is a receipt (``Stored``: the
counts), not the vectors; the driver records the further copies of the image found while it
was being analysed. So the store work the driver does per image no longer includes the faces,
and many workers' commits run in parallel (docs/ray.md measures both ways).

The same guarantees as the driver's writes: an image is committed whole or not at all; a
worker killed after its commit and before its receipt reached the driver is retried, and the
retry finds the image stored and records the appearance only; a killed driver leaves every
committed image with its first appearance, and the next run finds the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from facetrail.errors import ConfigError
from facetrail.pipeline.analyze import Analysed, AnalyseTask, AnalyzerWorker, Result, Task
from facetrail.records import Provenance
from facetrail.settings import Settings
from facetrail.store import Store, open_store
from facetrail.suppression import Suppressor

WRITES = ("driver", "workers")


@dataclass(frozen=True)
class StoreWrite:
    """Where a worker records the image it analysed."""

    source_id: int
    run_id: int
    model_id: int
    detector: str
    found: tuple[Provenance, str | None]
    """The first copy of the image the run found, with its fingerprint."""


@dataclass(frozen=True)
class AnalyseAndStore:
    task: AnalyseTask
    write: StoreWrite


@dataclass(frozen=True)
class Stored:
    """A worker's receipt for an image it committed (or found committed already)."""

    sha256: str
    faces: int
    suppressed: int
    already: bool
    """The image was in the store already (a retry after the worker that committed it died):
    only its appearance was recorded."""
    appearance_added: bool = True


WriteTask = Task | AnalyseAndStore
WriteResult = Result | Stored


def check_writes(settings: Settings) -> None:
    """Workers write only to a store that many processes write at once."""
    if settings.ingest_writes == "workers" and not (settings.store_url or "").startswith(
            ("postgresql:", "postgres:")):
        raise ConfigError(
            "FACETRAIL_INGEST_WRITES=workers needs a PostgreSQL store (FACETRAIL_STORE_URL="
            "postgresql://...): a SQLite store takes one writer at a time; unset it to let "
            "the ingesting process write")


@dataclass(frozen=True)
class WritingWorker:
    """The recipe of a worker that analyses and writes: an analyzer like the driver's, and a
    connection to the store its settings name, opened once when the worker starts."""

    analyzer: AnalyzerWorker

    def start(self) -> Callable[[WriteTask], WriteResult]:
        analyzer = self.analyzer.analyzer()
        settings = analyzer.settings
        url = settings.store_url
        assert url is not None  # check_writes, in the driver
        store = open_store(url)
        suppressor = Suppressor.of(store, settings, analyzer.model.model.metric)

        def work(task: WriteTask) -> WriteResult:
            if isinstance(task, AnalyseAndStore):
                return _analyse_and_store(analyzer.run, store, suppressor, task)
            return analyzer.run(task)

        return work


def _analyse_and_store(run: Callable[[Task], Any], store: Store, suppressor: Suppressor,
                       job: AnalyseAndStore) -> Stored:
    sha, w = job.task.sha256, job.write
    if store.has_image(sha, w.model_id):
        added = store.add_appearances(sha, w.model_id, w.source_id, w.run_id, [w.found])
        return Stored(sha, faces=0, suppressed=0, already=True, appearance_added=bool(added))
    outcome = run(job.task)
    assert isinstance(outcome, Analysed)
    analysis, suppressed = suppressor.suppress(outcome.analysis, w.model_id)
    if store.add_image(analysis, outcome.size, w.model_id, w.detector, w.source_id, w.run_id,
                       [w.found]):
        return Stored(sha, faces=len(analysis.faces), suppressed=suppressed, already=False)
    return Stored(sha, faces=0, suppressed=0, already=True)  # another run stored it meanwhile
