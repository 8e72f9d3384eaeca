"""Ingest jobs: ingests queued to run in the background, kept in the store so that one left
queued or running when its runner stopped runs again (ingest is idempotent, so what was done
is skipped).

The engine owns them (``Facetrail.add_job``, ``cancel_job``, ``claim_job``, ``run_job``); a
runner (each web server process has one) only decides when to claim and run them. Several
runners share one store, so a job is run under a lease: a runner *claims* it (it becomes the
job's holder), renews the lease every ``HEARTBEAT_SECONDS`` while it runs it, and gives it up
when it stops. A job whose holder stopped renewing for ``LEASE_SECONDS`` (a killed process, a
lost host), or whose holder is known to be dead (a process of this host that no longer
exists), is claimed again by another runner. Runners compare their own clocks with the
heartbeats of others: hosts' clocks must agree to well within ``LEASE_SECONDS``.

Cancelling is recorded in the store, so a job cancelled from another process stops at its next
progress write; so does a job whose lease another runner took over.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facetrail import serialize
from facetrail.audit import AuditEvent
from facetrail.errors import FacetrailError, PolicyError
from facetrail.sources.confine import check_targets
from facetrail.store import JobRow, RunCounts

if TYPE_CHECKING:
    from facetrail.engine import Facetrail

UNFINISHED = ("queued", "running")
FINISHED = ("completed", "failed", "cancelled")
PROGRESS_EVERY = 0.5
"""Seconds between progress writes to the store (and checks for a cancel)."""
HEARTBEAT_SECONDS = 5.0
"""How often a runner renews the lease of the job it runs."""
LEASE_SECONDS = 30.0
"""A running job whose lease was not renewed for this long lost its runner."""


def new_holder() -> str:
    """A runner's name on the leases it takes: ``host:pid:token``, unique to the runner."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def holder_gone(holder: str | None) -> bool:
    """The lease holder ran in a process of this host that no longer exists. (A holder on
    another host, or whose process id is in use again, is waited for until its lease is
    stale.)"""
    host, _, rest = (holder or "").partition(":")
    pid = rest.partition(":")[0]
    if os.name != "posix" or host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists, as another user's process
    return False


def utc_ago(seconds: float) -> str:
    """The UTC time ``seconds`` ago, written as ``audit.utc_now`` writes times."""
    then = datetime.now(UTC) - timedelta(seconds=seconds)
    return then.isoformat(timespec="microseconds").replace("+00:00", "Z")


class _Stop(KeyboardInterrupt):
    """Raised inside a running ingest to stop it; the ingest records the run as interrupted."""


class Jobs:
    def __init__(self, engine: Facetrail) -> None:
        self.engine = engine
        self.store = engine.store

    def add(self, source: str, paths: Sequence[str], actor: str) -> JobRow:
        """Queue an ingest of ``source`` (``paths`` under it; none: the whole source)."""
        row = self.store.get_source(source)
        check_targets(row.kind, row.uri, [Path(p).expanduser() for p in paths])
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

    def claim(self, holder: str) -> JobRow | None:
        """Claim for ``holder`` the oldest job it may run: a queued one, or one whose runner
        died. None: there is none."""
        stale = utc_ago(LEASE_SECONDS)
        for job in self.store.list_jobs(unfinished=True):
            gone = job.holder if job.status == "running" and holder_gone(job.holder) else None
            held = (job.status == "running" and job.heartbeat_at is not None
                    and job.heartbeat_at >= stale and gone is None)
            if held:
                continue  # alive elsewhere: spare the store a write
            claimed = self.store.claim_job(job.id, holder, stale, gone)
            if claimed is not None:
                return claimed
        return None

    def renew(self, job_id: int, holder: str) -> bool:
        """Renew ``holder``'s lease on a job it runs; False if it lost it (or the job ended)."""
        return self.store.renew_job(job_id, holder)

    def run(self, job_id: int, holder: str,
            stopping: Callable[[], bool] = lambda: False) -> JobRow:
        """Run a job ``holder`` claimed through ``Facetrail.ingest`` as its creator, and record
        how it ended; the caller renews the lease meanwhile. When ``stopping()`` turns true
        the ingest is interrupted, the job stays 'running' and its lease is given up, for
        any runner to claim. A job ``holder`` does not hold is returned as it is."""
        store = self.store
        job = store.get_job(job_id)
        if job.status != "running" or job.holder != holder:
            return job
        last = 0.0

        def progress(counts: RunCounts, total: int | None) -> None:
            nonlocal last
            if stopping():
                raise _Stop
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY:
                last = now
                row = store.update_job(job_id, progress=_progress(counts, total))
                if row.status != "running" or row.holder != holder:
                    raise _Stop  # cancelled, or taken over by another runner meanwhile

        try:
            report = self.engine.ingest(
                job.source, [Path(p) for p in job.paths] or None, progress=progress,
                actor=job.created_by,
            )
        except _Stop:
            store.release_job(job_id, holder)  # if it is still this runner's
            return store.get_job(job_id)  # cancelled, taken over, or to be claimed again
        except FacetrailError as exc:
            return store.update_job(job_id, status="failed", error=f"{exc.code}: {exc}")
        except Exception as exc:  # a job must fail visibly, never kill its runner
            return store.update_job(job_id, status="failed",
                                    error=f"{type(exc).__name__}: {exc}")
        now = store.get_job(job_id)  # as it finished
        cancelled = now.status != "running" or now.holder != holder
        return store.update_job(
            job_id, status=None if cancelled else "completed", run_id=report.run_id,
            progress={**serialize.ingest_report(report), "total": report.items},
        )


def _progress(c: RunCounts, total: int | None) -> dict[str, Any]:
    return {"items": c.items, "images_new": c.images_new, "duplicates": c.duplicates,
            "skipped": c.skipped, "faces": c.faces, "errors": c.errors, "total": total}
