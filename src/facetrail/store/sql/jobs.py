"""Ingest jobs started over HTTP; they run in the background and resume after restarts.

A job's lease (``holder``, ``heartbeat_at``) is taken and renewed by conditional UPDATEs whose
row count says whether they matched: one statement each, so two runners claiming a job at once
cannot both get it (SQLite runs writes one at a time; PostgreSQL re-checks the condition of a
waiting UPDATE against the row the other one committed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from facetrail.audit import utc_now
from facetrail.errors import NotFoundError
from facetrail.store.base import JobRow
from facetrail.store.sql.core import SQLCore

_JOB_SQL = "SELECT j.*, s.name AS source FROM jobs j JOIN sources s ON s.id = j.source_id"
UNFINISHED = ("queued", "running")


class JobTables(SQLCore):
    def add_job(self, source_id: int, paths: Sequence[str], actor: str) -> JobRow:
        with self._tx() as db:
            job_id = self._insert(
                db,
                "INSERT INTO jobs (source_id, paths, status, created_by, created_at)"
                " VALUES (?,?,?,?,?)",
                (source_id, json.dumps(list(paths)), "queued", actor, utc_now()),
            )
        return self.get_job(job_id)

    def get_job(self, job_id: int) -> JobRow:
        row = self._db.execute(_JOB_SQL + " WHERE j.id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no ingest job {job_id}")
        return _job_row(row)

    def list_jobs(self, unfinished: bool = False, limit: int = 200) -> list[JobRow]:
        """Newest first; ``unfinished``: queued and running ones, oldest first."""
        if unfinished:
            sql = _JOB_SQL + " WHERE j.status IN ('queued', 'running') ORDER BY j.id"
        else:
            sql = _JOB_SQL + " ORDER BY j.id DESC"
        return [_job_row(r) for r in self._db.execute(f"{sql} LIMIT ?", (limit,))]

    def update_job(
        self, job_id: int, *, status: str | None = None, progress: dict[str, Any] | None = None,
        run_id: int | None = None, error: str | None = None, started: bool = False,
    ) -> JobRow:
        """Change a job; ``started`` counts an attempt, a final status sets finished_at."""
        sets: list[str] = []
        args: list[Any] = []
        if status is not None:
            sets.append("status=?")
            args.append(status)
            if status not in UNFINISHED:
                sets.append("finished_at=?")
                args.append(utc_now())
        if progress is not None:
            sets.append("progress=?")
            args.append(json.dumps(progress))
        if error is not None:
            sets.append("error=?")
            args.append(error)
        if started:
            sets.append("attempts=attempts+1")
            sets.append("started_at=coalesce(started_at, ?)")
            args.append(utc_now())
        if sets or run_id is not None:
            with self._tx() as db:
                if run_id is not None:
                    row = db.execute("SELECT run_ids FROM jobs WHERE id=?", (job_id,)).fetchone()
                    if row is not None:
                        sets.append("run_ids=?")
                        args.append(json.dumps([*json.loads(row[0]), run_id]))
                if sets:
                    db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=?", (*args, job_id))
        return self.get_job(job_id)

    def claim_job(
        self, job_id: int, holder: str, stale_before: str, gone: str | None = None
    ) -> JobRow | None:
        now = utc_now()
        with self._tx() as db:
            claimed = db.execute(
                "UPDATE jobs SET status='running', holder=?, heartbeat_at=?,"
                " attempts=attempts+1, started_at=coalesce(started_at, ?)"
                " WHERE id=? AND (status='queued' OR (status='running' AND"
                " (heartbeat_at IS NULL OR heartbeat_at < ? OR holder = ?)))",
                (holder, now, now, job_id, stale_before, gone),
            ).rowcount
        job = self.get_job(job_id)  # raises NotFoundError for an unknown job
        return job if claimed == 1 else None

    def renew_job(self, job_id: int, holder: str) -> bool:
        with self._tx() as db:
            return db.execute(
                "UPDATE jobs SET heartbeat_at=? WHERE id=? AND holder=? AND status='running'",
                (utc_now(), job_id, holder),
            ).rowcount == 1

    def release_job(self, job_id: int, holder: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET heartbeat_at=NULL WHERE id=? AND holder=? AND status='running'",
                (job_id, holder),
            )


def _job_row(row: Any) -> JobRow:
    return JobRow(
        id=row["id"], source=row["source"], paths=tuple(json.loads(row["paths"])),
        status=row["status"], created_by=row["created_by"], created_at=row["created_at"],
        started_at=row["started_at"], finished_at=row["finished_at"],
        attempts=row["attempts"], run_ids=tuple(json.loads(row["run_ids"])),
        progress=json.loads(row["progress"]), error=row["error"], holder=row["holder"],
        heartbeat_at=row["heartbeat_at"],
    )
