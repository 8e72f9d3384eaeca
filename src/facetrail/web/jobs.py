"""Sources and ingest jobs over HTTP, and the web server's job runner.

Jobs are the engine's (``Facetrail.add_job``, ``claim_job``, ``run_job``, ``cancel_job``). Every
server process has one runner: it claims jobs from the store (a job submitted here at once,
any other every ``POLL_SECONDS``), so that with several processes or hosts over one store each
job runs in exactly one of them, and one whose runner died is picked up by another
(``facetrail.jobs``: leases). Jobs run one at a time on the runner's thread, through the
process's engine (its models, its index, a store connection of the thread's own), at a lower
CPU priority than searches: a search never waits for an ingest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from facetrail import serialize
from facetrail.jobs import FINISHED, HEARTBEAT_SECONDS, new_holder
from facetrail.store import JobRow
from facetrail.web.auth import Principal, require
from facetrail.web.deps import MAX_DAYS, Id, Svc

if TYPE_CHECKING:
    from facetrail.web.service import Service

router = APIRouter()
log = logging.getLogger(__name__)

Admin = Annotated[Principal, Depends(require("admin"))]

POLL_SECONDS = 2.0
"""How often an idle runner looks in the store for jobs to claim, and for jobs that other
processes finished (whose faces its index then takes in)."""
JOB_NICENESS = 10
"""How much lower than the server's the CPU priority of the job thread is (Linux: per thread;
the ingest's worker processes inherit it). At 10 a busy ingest gets about a tenth of a core a
search wants (bench/server_throughput.py)."""


class JobRunner:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.holder = new_holder()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._running: int | None = None
        self._finished: set[int] | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the job thread and the heartbeat of the leases it takes."""
        self._threads = [
            threading.Thread(target=self._work, name="facetrail-jobs", daemon=True),
            threading.Thread(target=self._beat, name="facetrail-jobs-heartbeat", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Interrupt the running job and give up its lease, for any runner to claim."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def submit(self, source: str, paths: list[str], actor: str) -> JobRow:
        job = self.service.engine.add_job(source, paths, actor=actor)
        self._wake.set()
        return job

    def _work(self) -> None:
        _lower_priority()
        engine = self.service.engine
        while not self._stopping.is_set():
            try:
                job = engine.claim_job(self.holder)
                if job is None:
                    self._catch_up()
                    self._wake.wait(POLL_SECONDS)
                    self._wake.clear()
                    continue
                self._running = job.id
                try:
                    engine.run_job(job.id, self.holder, stopping=self._stopping.is_set)
                finally:
                    self._running = None
            except Exception:  # the store failed under the runner: keep serving, try again
                log.exception("the job runner could not claim or record a job")
                self._stopping.wait(POLL_SECONDS)

    def _beat(self) -> None:
        while not self._stopping.wait(HEARTBEAT_SECONDS):
            job_id = self._running
            if job_id is None:
                continue
            try:
                # False: cancelled or taken over; the job stops at its next progress write.
                self.service.engine.renew_job(job_id, self.holder)
            except Exception:
                log.exception("the lease of ingest job %s could not be renewed", job_id)

    def _catch_up(self) -> None:
        """Bring the index up to the store when jobs ended since the last look (run here, they
        were synced as they ended; run by another process, their faces are new here)."""
        engine = self.service.engine
        finished = {j.id for j in engine.jobs(limit=50) if j.status in FINISHED}
        if self._finished is None or finished - self._finished:
            engine.index.sync()  # the first time, it opens the index before a search needs it
        self._finished = finished


def _lower_priority() -> None:
    """Lower this thread's CPU priority by ``JOB_NICENESS`` (Linux; elsewhere priorities are
    per process and are left alone)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid)
                           + JOB_NICENESS)


# -- sources ---------------------------------------------------------------------------------
class SourceIn(BaseModel):
    name: str = Field(min_length=1)
    kind: str
    uri: str = Field(min_length=1, description="Folder, manifest, or WARC/WACZ on the server.")
    lawful_basis: str = Field(min_length=1)
    purpose: str = Field(min_length=1)
    retention_days: int = Field(ge=1, le=MAX_DAYS, description="Days an appearance is kept "
                                "after its first ingest; the retention sweep erases what is "
                                "older.")


class RetentionIn(BaseModel):
    retention_days: int = Field(ge=1, le=MAX_DAYS)


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
    """Change how long a source's data is kept, in days."""
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
def get_job(job_id: Id, who: Admin, service: Svc) -> dict[str, Any]:
    job = service.engine.job(job_id)
    service.engine.source(job.source, actor=who.actor, owned=True)
    return {"job": serialize.job(job)}


@router.post("/jobs/{job_id}/cancel", tags=["jobs"])
def cancel_job(job_id: Id, who: Admin, service: Svc) -> dict[str, Any]:
    service.engine.source(service.engine.job(job_id).source, actor=who.actor, owned=True)
    return {"job": serialize.job(service.engine.cancel_job(job_id, actor=who.name))}
