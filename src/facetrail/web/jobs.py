"""Sources and ingest jobs over HTTP.

Jobs run one at a time on a background thread, each through the same ``Facetrail.ingest`` the
CLI uses, on its own store connection. A job's status and progress live in the store, so a
job left queued or running when the server stopped (or was killed) runs again when it
starts; ingest is idempotent, so what was done is skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from facetrail import serialize
from facetrail.audit import AuditEvent
from facetrail.engine import Facetrail
from facetrail.errors import FacetrailError, PolicyError
from facetrail.store import JobRow, RunCounts, SourceRow
from facetrail.web.auth import Principal, require
from facetrail.web.deps import Svc

if TYPE_CHECKING:
    from facetrail.web.service import Service

router = APIRouter()
log = logging.getLogger(__name__)

Admin = Annotated[Principal, Depends(require("admin"))]
PROGRESS_EVERY = 0.5
"""Seconds between progress writes to the store."""


class _Stop(KeyboardInterrupt):
    """Raised inside a running ingest to stop it; the ingest records the run as interrupted."""


class JobRunner:
    def __init__(self, service: Service) -> None:
        self.service = service
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._cancel: set[int] = set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker and queue the jobs a previous server left unfinished."""
        for job in self.service.engine.store.list_jobs(unfinished=True):
            self._queue.put(job.id)
        self._thread = threading.Thread(target=self._work, name="facetrail-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Interrupt the running job, leaving it to resume at the next start."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=120)

    def submit(self, source: SourceRow, paths: list[str], actor: str) -> JobRow:
        store = self.service.engine.store
        job = store.add_job(source.id, paths, actor)
        store.append_audit(
            AuditEvent(actor=actor, action="ingest.start", purpose=source.purpose,
                       details={"job_id": job.id, "source": source.name,
                                "paths": list(paths) or [source.uri]})
        )
        self._queue.put(job.id)
        return job

    def cancel(self, job_id: int, actor: str) -> JobRow:
        store = self.service.engine.store
        job = store.get_job(job_id)
        if job.status not in ("queued", "running"):
            raise PolicyError(f"job {job_id} is {job.status}; only queued or running jobs stop")
        with self._lock:
            self._cancel.add(job_id)
            if job.status == "queued":
                job = store.update_job(job_id, status="cancelled")
        store.append_audit(
            AuditEvent(actor=actor, action="ingest.cancel",
                       details={"job_id": job_id, "source": job.source})
        )
        return job

    def _work(self) -> None:
        while not self._stopping.is_set():
            job_id = self._queue.get()
            if job_id is None:
                return
            try:
                self._run(job_id)
            except Exception:  # the store failed under the job: keep serving the others
                log.exception("ingest job %s could not be recorded", job_id)

    def _run(self, job_id: int) -> None:
        # The job reads and writes the store on its own connection, not the server's.
        with Facetrail(self.service.settings) as engine:
            if self._ingest(engine, job_id):
                with self.service.lock:
                    self.service.engine.index.sync()

    def _ingest(self, engine: Facetrail, job_id: int) -> bool:
        """Run one job; True when it completed."""
        store = engine.store
        with self._lock:
            job = store.get_job(job_id)
            if job.status not in ("queued", "running") or job_id in self._cancel:
                return False
            job = store.update_job(job_id, status="running", started=True)
        last = 0.0

        def progress(counts: RunCounts, total: int | None) -> None:
            nonlocal last
            if self._stopping.is_set() or job_id in self._cancel:
                raise _Stop
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY:
                last = now
                store.update_job(job_id, progress=_progress(counts, total))

        try:
            report = engine.ingest(
                job.source, [Path(p) for p in job.paths] or None, progress=progress,
                actor=job.created_by,
            )
        except _Stop:
            if job_id in self._cancel:
                store.update_job(job_id, status="cancelled")
            # else the server is stopping: the job stays 'running' and resumes at next start
            return False
        except FacetrailError as exc:
            store.update_job(job_id, status="failed", error=f"{exc.code}: {exc}")
            return False
        except Exception as exc:  # a job must fail visibly, never kill the worker
            store.update_job(job_id, status="failed", error=f"{type(exc).__name__}: {exc}")
            return False
        store.update_job(
            job_id, status="completed", run_id=report.run_id,
            progress={**serialize.ingest_report(report), "total": report.items},
        )
        return True


def _progress(c: RunCounts, total: int | None) -> dict[str, Any]:
    return {"items": c.items, "images_new": c.images_new, "duplicates": c.duplicates,
            "skipped": c.skipped, "faces": c.faces, "errors": c.errors, "total": total}


# -- JSON shapes -----------------------------------------------------------------------------
def source_json(s: SourceRow) -> dict[str, Any]:
    return {"id": s.id, "name": s.name, "kind": s.kind, "uri": s.uri,
            "lawful_basis": s.lawful_basis, "purpose": s.purpose,
            "retention_days": s.retention_days, "created_at": s.created_at,
            "created_by": s.created_by}


def job_json(j: JobRow) -> dict[str, Any]:
    return {"id": j.id, "source": j.source, "paths": list(j.paths), "status": j.status,
            "created_by": j.created_by, "created_at": j.created_at, "started_at": j.started_at,
            "finished_at": j.finished_at, "attempts": j.attempts, "run_ids": list(j.run_ids),
            "progress": j.progress, "error": j.error}


# -- sources ---------------------------------------------------------------------------------
class SourceIn(BaseModel):
    name: str = Field(min_length=1)
    kind: str
    uri: str = Field(min_length=1, description="Folder, manifest, or WARC/WACZ on the server.")
    lawful_basis: str = Field(min_length=1)
    purpose: str = Field(min_length=1)
    retention_days: int | None = Field(default=None, ge=1)


class RetentionIn(BaseModel):
    retention_days: int | None = Field(ge=1)


@router.get("/sources", tags=["sources"])
def list_sources(who: Admin, service: Svc) -> dict[str, Any]:
    """Sources with their counts (images, appearances, errors)."""
    stats = service.engine.stats().store
    out = []
    for s in service.engine.sources():
        counts = stats.source(s.name)
        out.append({**source_json(s), "images": counts.images if counts else 0,
                    "appearances": counts.appearances if counts else 0,
                    "errors": counts.errors if counts else 0})
    return {"sources": out}


@router.post("/sources", tags=["sources"], status_code=201)
def add_source(body: SourceIn, who: Admin, service: Svc) -> dict[str, Any]:
    """Register a collection the operator lawfully holds, on the server's file system."""
    row = service.engine.add_source(
        body.name, body.kind, body.uri, lawful_basis=body.lawful_basis, purpose=body.purpose,
        retention_days=body.retention_days, actor=who.name,
    )
    return {"source": source_json(row)}


@router.patch("/sources/{name}", tags=["sources"])
def set_retention(name: str, body: RetentionIn, who: Admin, service: Svc) -> dict[str, Any]:
    """Change how long a source's data is kept (null: no limit)."""
    engine = service.engine
    before = engine.store.get_source(name)
    row = engine.store.set_retention(name, body.retention_days)
    engine.store.append_audit(
        AuditEvent(actor=who.name, action="source.retention", purpose=row.purpose,
                   details={"source": name, "retention_days": row.retention_days,
                            "was": before.retention_days})
    )
    return {"source": source_json(row)}


@router.get("/sources/{name}/errors", tags=["sources"])
def source_errors(name: str, who: Admin, service: Svc) -> dict[str, Any]:
    """Items of the source that could not be ingested, and why."""
    return {"errors": [serialize.error_row(e) for e in service.engine.errors(name)]}


# -- jobs ------------------------------------------------------------------------------------
class JobIn(BaseModel):
    source: str
    paths: list[str] = Field(
        default_factory=list, description="Paths under the source; empty: the whole source."
    )


@router.post("/jobs", tags=["jobs"], status_code=202)
def start_job(body: JobIn, who: Admin, service: Svc) -> dict[str, Any]:
    """Start an ingest in the background; follow it with GET /jobs/{id}."""
    source = service.engine.store.get_source(body.source)
    return {"job": job_json(service.jobs.submit(source, body.paths, who.name))}


@router.get("/jobs", tags=["jobs"])
def list_jobs(who: Admin, service: Svc) -> dict[str, Any]:
    return {"jobs": [job_json(j) for j in service.engine.store.list_jobs()]}


@router.get("/jobs/{job_id}", tags=["jobs"])
def get_job(job_id: int, who: Admin, service: Svc) -> dict[str, Any]:
    return {"job": job_json(service.engine.store.get_job(job_id))}


@router.post("/jobs/{job_id}/cancel", tags=["jobs"])
def cancel_job(job_id: int, who: Admin, service: Svc) -> dict[str, Any]:
    return {"job": job_json(service.jobs.cancel(job_id, who.name))}
