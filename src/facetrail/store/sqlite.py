"""SQLite implementation of the store: one file, WAL mode, a versioned schema.

Every ingest write is one transaction per image (image + faces + appearances), so a crash
or ``kill -9`` at any moment leaves either all of an image or none of it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from facetrail.audit import GENESIS, AuditEvent, chain_hash, utc_now
from facetrail.errors import ConflictError, NotFoundError, PolicyError, StoreError
from facetrail.faces.base import ModelInfo
from facetrail.records import Appearance, ImageAnalysis, ImageInfo, Provenance
from facetrail.store.base import (
    AuditRow,
    ErrorRow,
    FaceRow,
    RunCounts,
    SourceRow,
    SourceSpec,
)

SCHEMA_VERSION = 2
MIGRATIONS = {1: "schema_v1.sql", 2: "schema_v2.sql"}
"""Schema version -> script that brings the previous version to it."""


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives process crashes; only an OS crash can lose the last
        # commits, never consistency.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    # -- plumbing ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this facetrail "
                f"({SCHEMA_VERSION}); upgrade facetrail"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            script = resources.files("facetrail.store").joinpath(MIGRATIONS[target]).read_text()
            with self._tx() as db:
                for statement in _statements(script):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={target}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    # -- sources ----------------------------------------------------------------------------
    def add_source(self, spec: SourceSpec, actor: str) -> SourceRow:
        for field in ("lawful_basis", "purpose"):
            if not getattr(spec, field).strip():
                raise PolicyError(f"a source needs a {field.replace('_', ' ')}")
        now = utc_now()
        try:
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO sources (name, kind, uri, lawful_basis, purpose,"
                    " retention_days, created_at, created_by) VALUES (?,?,?,?,?,?,?,?)",
                    (spec.name, spec.kind, spec.uri, spec.lawful_basis.strip(),
                     spec.purpose.strip(), spec.retention_days, now, actor),
                )
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise ConflictError(f"a source named {spec.name!r} already exists") from exc
            raise PolicyError(f"source rejected: {exc}") from exc
        return self._source_row(self._one("SELECT * FROM sources WHERE id=?", cur.lastrowid))

    def get_source(self, name: str) -> SourceRow:
        row = self._db.execute("SELECT * FROM sources WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no source named {name!r}; see 'facetrail sources list'")
        return self._source_row(row)

    def list_sources(self) -> list[SourceRow]:
        rows = self._db.execute("SELECT * FROM sources ORDER BY name").fetchall()
        return [self._source_row(r) for r in rows]

    @staticmethod
    def _source_row(row: sqlite3.Row) -> SourceRow:
        return SourceRow(
            id=row["id"], name=row["name"], kind=row["kind"], uri=row["uri"],
            lawful_basis=row["lawful_basis"], purpose=row["purpose"],
            retention_days=row["retention_days"], created_at=row["created_at"],
            created_by=row["created_by"],
        )

    # -- models -----------------------------------------------------------------------------
    def model_id(self, model: ModelInfo) -> int:
        row = self._db.execute("SELECT id FROM models WHERE key=?", (model.key,)).fetchone()
        if row is not None:
            return int(row[0])
        with self._tx() as db:
            db.execute(
                "INSERT INTO models (key, info, created_at) VALUES (?,?,?)"
                " ON CONFLICT(key) DO NOTHING",
                (model.key, model.to_json(), utc_now()),
            )
        return int(self._one("SELECT id FROM models WHERE key=?", model.key)[0])

    # -- ingest -----------------------------------------------------------------------------
    def start_run(self, source_id: int, paths: Sequence[str], actor: str) -> int:
        with self._tx() as db:
            # Runs left 'running' by a process that no longer exists were interrupted.
            for row in db.execute("SELECT id, pid FROM ingest_runs WHERE status='running'"):
                if not _pid_alive(row["pid"]):
                    db.execute(
                        "UPDATE ingest_runs SET status='interrupted' WHERE id=?", (row["id"],)
                    )
            cur = db.execute(
                "INSERT INTO ingest_runs (source_id, paths, started_at, status, os_user, pid)"
                " VALUES (?,?,?,?,?,?)",
                (source_id, json.dumps(list(paths)), utc_now(), "running", actor, os.getpid()),
            )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, status: str, counts: RunCounts) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE ingest_runs SET status=?, finished_at=?, items=?, images_new=?,"
                " duplicates=?, skipped=?, faces=?, errors=? WHERE id=?",
                (status, utc_now(), counts.items, counts.images_new, counts.duplicates,
                 counts.skipped, counts.faces, counts.errors, run_id),
            )

    def seen(self, source_id: int, location: str, fingerprint: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM appearances WHERE source_id=? AND location=? AND fingerprint=?"
            " LIMIT 1",
            (source_id, location, fingerprint),
        ).fetchone()
        return row is not None

    def has_image(self, sha256: str, model_id: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM images WHERE sha256=? AND model_id=?", (sha256, model_id)
        ).fetchone()
        return row is not None

    def add_image(
        self,
        analysis: ImageAnalysis,
        size: int,
        model_id: int,
        detector: str,
        source_id: int,
        run_id: int,
        found_at: Sequence[tuple[Provenance, str | None]],
    ) -> None:
        now = utc_now()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO images (sha256, model_id, width, height, format, bytes,"
                " face_count, created_at) VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT(sha256, model_id) DO NOTHING",
                (analysis.sha256, model_id, analysis.width, analysis.height, analysis.format,
                 size, len(analysis.faces), now),
            )
            if cur.rowcount:
                image_id = cur.lastrowid
                db.executemany(
                    "INSERT INTO faces (image_id, model_id, detector, ordinal, x, y, w, h,"
                    " landmarks, det_score, quality, sharpness, embedding, runtime)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (image_id, model_id, detector, i, *f.box,
                         json.dumps([list(p) for p in f.landmarks]), f.det_score, f.quality,
                         f.sharpness, np.ascontiguousarray(f.embedding, "<f4").tobytes(),
                         f.runtime)
                        for i, f in enumerate(analysis.faces)
                    ],
                )
            self._appearances(db, analysis.sha256, model_id, source_id, run_id, found_at, now)

    def add_appearances(
        self,
        sha256: str,
        model_id: int,
        source_id: int,
        run_id: int,
        found_at: Sequence[tuple[Provenance, str | None]],
    ) -> int:
        with self._tx() as db:
            return self._appearances(db, sha256, model_id, source_id, run_id, found_at, utc_now())

    def _appearances(
        self,
        db: sqlite3.Connection,
        sha256: str,
        model_id: int,
        source_id: int,
        run_id: int,
        found_at: Sequence[tuple[Provenance, str | None]],
        now: str,
    ) -> int:
        image_id = db.execute(
            "SELECT id FROM images WHERE sha256=? AND model_id=?", (sha256, model_id)
        ).fetchone()[0]
        added = 0
        for prov, fingerprint in found_at:
            cur = db.execute(
                "INSERT INTO appearances (image_id, source_id, location, fingerprint, source_url,"
                " page_urls, captured_at, title, record_id, run_id, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(source_id, location, image_id) DO UPDATE SET"
                " fingerprint=excluded.fingerprint",
                (image_id, source_id, prov.location, fingerprint, prov.source_url,
                 json.dumps(list(prov.page_urls)), prov.captured_at, prov.title,
                 prov.record_id, run_id, now),
            )
            added += cur.rowcount
            db.execute(
                "DELETE FROM ingest_errors WHERE source_id=? AND location=?",
                (source_id, prov.location),
            )
        return added

    def record_error(
        self, source_id: int, run_id: int, location: str, code: str, reason: str
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO ingest_errors (source_id, location, code, reason, run_id, at)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT(source_id, location) DO UPDATE SET"
                " code=excluded.code, reason=excluded.reason, run_id=excluded.run_id,"
                " at=excluded.at",
                (source_id, location, code, reason, run_id, utc_now()),
            )

    def clear_archive_errors(self, source_id: int, under: str) -> None:
        """Forget archive-level failures (``…#after-<offset>``) of archives under a path.

        They are found again, if still there, when the archive is read."""
        pattern = under.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self._tx() as db:
            db.execute(
                "DELETE FROM ingest_errors WHERE source_id = ? AND location LIKE ? ESCAPE '\\'"
                " AND location LIKE '%#after-%'",
                (source_id, pattern + "%"),
            )

    def errors(self, source: str | None = None) -> list[ErrorRow]:
        sql = (
            "SELECT s.name, e.location, e.code, e.reason, e.run_id, e.at FROM ingest_errors e"
            " JOIN sources s ON s.id = e.source_id"
        )
        args: tuple[Any, ...] = ()
        if source is not None:
            sql += " WHERE s.id = ?"
            args = (self.get_source(source).id,)
        rows = self._db.execute(sql + " ORDER BY s.name, e.location", args).fetchall()
        return [ErrorRow(*tuple(r)) for r in rows]

    # -- faces ------------------------------------------------------------------------------
    def face_count(self, model_id: int) -> tuple[int, int]:
        row = self._db.execute(
            "SELECT count(*), coalesce(max(id), 0) FROM faces WHERE model_id=?", (model_id,)
        ).fetchone()
        return int(row[0]), int(row[1])

    def iter_embeddings(
        self, model_id: int, after_id: int = 0, batch: int = 65536
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        last = after_id
        while True:
            rows = self._db.execute(
                "SELECT id, embedding FROM faces WHERE model_id=? AND id>? ORDER BY id LIMIT ?",
                (model_id, last, batch),
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(
                len(rows), -1
            )
            yield ids, vectors.astype(np.float32, copy=False)
            last = int(ids[-1])

    def faces(self, face_ids: Sequence[int]) -> dict[int, FaceRow]:
        if not face_ids:
            return {}
        marks = ",".join("?" * len(face_ids))
        rows = self._db.execute(
            "SELECT f.id, f.x, f.y, f.w, f.h, f.det_score, f.quality, f.runtime, f.image_id,"
            " i.sha256, i.width, i.height FROM faces f JOIN images i ON i.id = f.image_id"
            f" WHERE f.id IN ({marks})",
            tuple(face_ids),
        ).fetchall()
        image_ids = sorted({r["image_id"] for r in rows})
        seen_at: dict[int, list[Appearance]] = {i: [] for i in image_ids}
        if image_ids:
            marks = ",".join("?" * len(image_ids))
            for a in self._db.execute(
                "SELECT a.image_id, s.name, a.location, a.source_url, a.page_urls,"
                " a.captured_at, a.title, a.record_id FROM appearances a"
                f" JOIN sources s ON s.id = a.source_id WHERE a.image_id IN ({marks})"
                " ORDER BY a.image_id, s.name, a.location",
                tuple(image_ids),
            ):
                seen_at[a["image_id"]].append(
                    Appearance(
                        source=a["name"], location=a["location"], source_url=a["source_url"],
                        page_urls=tuple(json.loads(a["page_urls"])),
                        captured_at=a["captured_at"], title=a["title"], record_id=a["record_id"],
                    )
                )
        return {
            r["id"]: FaceRow(
                face_id=r["id"],
                box=(r["x"], r["y"], r["w"], r["h"]),
                det_score=r["det_score"],
                quality=r["quality"],
                runtime=r["runtime"],
                image=ImageInfo(r["sha256"], r["width"], r["height"]),
                appearances=tuple(seen_at[r["image_id"]]),
            )
            for r in rows
        }

    # -- audit ------------------------------------------------------------------------------
    def append_audit(self, event: AuditEvent) -> int:
        canonical = event.canonical()
        with self._tx() as db:
            row = db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            prev = row[0] if row else GENESIS
            cur = db.execute(
                "INSERT INTO audit (at, actor, action, case_ref, purpose, details, prev_hash,"
                " hash) VALUES (?,?,?,?,?,?,?,?)",
                (event.at, event.actor, event.action, event.case_ref, event.purpose,
                 json.dumps(event.details, sort_keys=True, separators=(",", ":")), prev,
                 chain_hash(prev, canonical)),
            )
        return int(cur.lastrowid or 0)

    def audit_rows(self) -> list[AuditRow]:
        return [
            AuditRow(
                id=r["id"],
                event=AuditEvent(
                    actor=r["actor"], action=r["action"], details=json.loads(r["details"]),
                    case_ref=r["case_ref"], purpose=r["purpose"], at=r["at"],
                ),
                prev_hash=r["prev_hash"],
                hash=r["hash"],
            )
            for r in self._db.execute("SELECT * FROM audit ORDER BY id")
        ]

    # -- reporting --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        def count(sql: str) -> int:
            return int(self._db.execute(sql).fetchone()[0])

        per_source = [
            dict(r)
            for r in self._db.execute(
                "SELECT s.name AS source, s.kind, s.retention_days,"
                " (SELECT count(*) FROM appearances a WHERE a.source_id = s.id) AS appearances,"
                " (SELECT count(DISTINCT a.image_id) FROM appearances a"
                "   WHERE a.source_id = s.id) AS images,"
                " (SELECT count(*) FROM ingest_errors e WHERE e.source_id = s.id) AS errors"
                " FROM sources s ORDER BY s.name"
            )
        ]
        return {
            "sources": count("SELECT count(*) FROM sources"),
            "images": count("SELECT count(*) FROM images"),
            "appearances": count("SELECT count(*) FROM appearances"),
            "faces": count("SELECT count(*) FROM faces"),
            "images_without_faces": count("SELECT count(*) FROM images WHERE face_count = 0"),
            "errors": count("SELECT count(*) FROM ingest_errors"),
            "searches": count("SELECT count(*) FROM audit WHERE action = 'search'"),
            "ingest_runs": count("SELECT count(*) FROM ingest_runs"),
            "per_source": per_source,
            "faces_by_runtime": dict(
                self._db.execute("SELECT runtime, count(*) FROM faces GROUP BY runtime ORDER BY 1")
            ),
        }

    def _one(self, sql: str, *args: Any) -> sqlite3.Row:
        row = self._db.execute(sql, args).fetchone()
        if row is None:
            raise NotFoundError(sql)
        return row


def _statements(script: str) -> list[str]:
    """Split a schema script into statements, keeping trigger bodies whole."""
    out: list[str] = []
    buf: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--") and not buf:
            continue
        buf.append(line)
        joined = "\n".join(buf).strip()
        if joined and sqlite3.complete_statement(joined):
            out.append(joined)
            buf = []
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
