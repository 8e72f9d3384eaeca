"""Sources and ingest jobs over HTTP, and the web server's job runner.

Jobs are the engine's (``Facetrail.add_job``, ``cancel_job``, ``run_job``); the runner runs
them one at a time on a background thread, each on its own store connection, and queues the
ones a previous server left unfinished when it starts.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from facetrail import serialize
from facetrail.engine import Facetrail
from facetrail.store import JobRow
from facetrail.web.auth import Principal, require
from facetrail.web.deps import Svc

if TYPE_CHECKING:
    from facetrail.web.service import Service

router = APIRouter()
log = logging.getLogger(__name__)

Admin = Annotated[Principal, Depends(require("admin"))]


class JobRunner:
    def __init__(self, service: Service) -> None:
        self.service = service
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker and queue the jobs a previous server left unfinished."""
        for job in self.service.engine.jobs(unfinished=True):
            self._queue.put(job.id)
        self._thread = threading.Thread(target=self._work, name="facetrail-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Interrupt the running job, leaving it to resume at the next start."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=120)

    def submit(self, source: str, paths: list[str], actor: str) -> JobRow:
        job = self.service.engine.add_job(source, paths, actor=actor)
        self._queue.put(job.id)
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
            job = engine.run_job(job_id, stopping=self._stopping.is_set)
        if job.status == "completed":
            with self.service.lock:
                self.service.engine.index.sync()


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
    for s in service.engine.sources(actor=who.actor):
        counts = stats.source(s.name)
        out.append({**serialize.source(s), "images": counts.images if counts else 0,
                    "appearances": counts.appearances if counts else 0,
                    "errors": counts.errors if counts else 0})
    return {"sources": out}


@router.post("/sources", tags=["sources"], status_code=201)
def add_source(body: SourceIn, who: Admin, service: Svc) -> dict[str, Any]:
    """Register a collection the operator lawfully holds, on the server's file system."""
    row = service.engine.add_source(
        body.name, body.kind, body.uri, lawful_basis=body.lawful_basis, purpose=body.purpose,
        retention_days=body.retention_days, actor=who.name, org=who.org,
    )
    return {"source": serialize.source(row)}


@router.patch("/sources/{name}", tags=["sources"])
def set_retention(name: str, body: RetentionIn, who: Admin, service: Svc) -> dict[str, Any]:
    """Change how long a source's data is kept (null: no limit)."""
    service.engine.source(name, actor=who.actor, owned=True)
    row = service.engine.set_retention(name, body.retention_days, actor=who.name)
    return {"source": serialize.source(row)}


@router.get("/sources/{name}/errors", tags=["sources"])
def source_errors(name: str, who: Admin, service: Svc) -> dict[str, Any]:
    """Items of the source that could not be ingested, and why."""
    service.engine.source(name, actor=who.actor, owned=True)
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
    service.engine.source(body.source, actor=who.actor, owned=True)
    return {"job": serialize.job(service.jobs.submit(body.source, body.paths, who.name))}


@router.get("/jobs", tags=["jobs"])
def list_jobs(who: Admin, service: Svc) -> dict[str, Any]:
    owned = {s.name for s in service.engine.sources(actor=who.actor) if s.org_id == who.org_id}
    return {"jobs": [serialize.job(j) for j in service.engine.jobs() if j.source in owned]}


@router.get("/jobs/{job_id}", tags=["jobs"])
def get_job(job_id: int, who: Admin, service: Svc) -> dict[str, Any]:
    job = service.engine.job(job_id)
    service.engine.source(job.source, actor=who.actor, owned=True)
    return {"job": serialize.job(job)}


@router.post("/jobs/{job_id}/cancel", tags=["jobs"])
def cancel_job(job_id: int, who: Admin, service: Svc) -> dict[str, Any]:
    service.engine.source(service.engine.job(job_id).source, actor=who.actor, owned=True)
    return {"job": serialize.job(service.engine.cancel_job(job_id, actor=who.name))}
