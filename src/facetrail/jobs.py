"""Ingest jobs: ingests queued to run in the background, kept in the store so that one left
queued or running when its runner stopped runs again when it starts (ingest is idempotent, so
what was done is skipped).

The engine owns them (``Facetrail.add_job``, ``cancel_job``, ``run_job``); a runner (the web
server's thread) only decides when ``run_job`` is called. Cancelling is recorded in the store,
so a job cancelled from another process stops at its next progress write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facetrail import serialize
from facetrail.audit import AuditEvent
from facetrail.errors import FacetrailError, PolicyError
from facetrail.store import JobRow, RunCounts

if TYPE_CHECKING:
    from facetrail.engine import Facetrail

UNFINISHED = ("queued", "running")
FINISHED = ("completed", "failed", "cancelled")
PROGRESS_EVERY = 0.5
"""Seconds between progress writes to the store (and checks for a cancel)."""


class _Stop(KeyboardInterrupt):
    """Raised inside a running ingest to stop it; the ingest records the run as interrupted."""


class Jobs:
    def __init__(self, engine: Facetrail) -> None:
        self.engine = engine
        self.store = engine.store

    def add(self, source: str, paths: Sequence[str], actor: str) -> JobRow:
        """Queue an ingest of ``source`` (``paths`` under it; none: the whole source)."""
        row = self.store.get_source(source)
        job = self.store.add_job(row.id, paths, actor)
        self.store.append_audit(
            AuditEvent(actor=actor, action="ingest.start", purpose=row.purpose, org=row.org,
                       details={"job_id": job.id, "source": row.name,
                                "paths": list(paths) or [row.uri]})
        )
        return job

    def cancel(self, job_id: int, actor: str) -> JobRow:
        """Cancel a queued job, or stop a running one at its next progress write."""
        job = self.store.get_job(job_id)
        if job.status not in UNFINISHED:
            raise PolicyError(f"job {job_id} is {job.status}; only queued or running jobs stop")
        job = self.store.update_job(job_id, status="cancelled")
        self.store.append_audit(
            AuditEvent(actor=actor, action="ingest.cancel",
                       org=self.store.get_source(job.source).org,
                       details={"job_id": job_id, "source": job.source})
        )
        return job

    def run(self, job_id: int, stopping: Callable[[], bool] = lambda: False) -> JobRow:
        """Run a queued (or interrupted) job through ``Facetrail.ingest`` as its creator, and
        record how it ended. When ``stopping()`` turns true the ingest is interrupted and the
        job stays 'running', to run again at the runner's next start."""
        store = self.store
        job = store.get_job(job_id)
        if job.status not in UNFINISHED:
            return job
        job = store.update_job(job_id, status="running", started=True)
        last = 0.0

        def progress(counts: RunCounts, total: int | None) -> None:
            nonlocal last
            if stopping():
                raise _Stop
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY:
                last = now
                if store.update_job(job_id, progress=_progress(counts, total)).status != "running":
                    raise _Stop  # cancelled meanwhile

        try:
            report = self.engine.ingest(
                job.source, [Path(p) for p in job.paths] or None, progress=progress,
                actor=job.created_by,
            )
        except _Stop:
            return store.get_job(job_id)  # cancelled, or resumes at the next start
        except FacetrailError as exc:
            return store.update_job(job_id, status="failed", error=f"{exc.code}: {exc}")
        except Exception as exc:  # a job must fail visibly, never kill its runner
            return store.update_job(job_id, status="failed",
                                    error=f"{type(exc).__name__}: {exc}")
        cancelled = store.get_job(job_id).status != "running"  # as it finished
        return store.update_job(
            job_id, status=None if cancelled else "completed", run_id=report.run_id,
            progress={**serialize.ingest_report(report), "total": report.items},
        )


def _progress(c: RunCounts, total: int | None) -> dict[str, Any]:
    return {"items": c.items, "images_new": c.images_new, "duplicates": c.duplicates,
            "skipped": c.skipped, "faces": c.faces, "errors": c.errors, "total": total}
