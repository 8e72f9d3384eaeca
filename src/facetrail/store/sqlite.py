"""SQLite implementation of the store: one file, WAL mode, a versioned schema.

Every ingest write is one transaction per image (image + faces + appearances), so a crash
or ``kill -9`` at any moment leaves either all of an image or none of it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from facetrail.audit import GENESIS, AuditEvent, chain_hash, utc_now
from facetrail.errors import ConflictError, NotFoundError, PolicyError, StoreError
from facetrail.faces.base import ModelInfo
from facetrail.records import Appearance, ImageAnalysis, ImageInfo, ProbeFace, Provenance
from facetrail.store.base import (
    AuditQuery,
    AuditRow,
    Credential,
    ErrorRow,
    FaceRow,
    JobRow,
    LocatedFace,
    ProbeRow,
    ReviewRow,
    RunCounts,
    SearchRow,
    SourceRow,
    SourceSpec,
    UserRow,
)

SCHEMA_VERSION = 5
MIGRATIONS = {1: "schema_v1.sql", 2: "schema_v2.sql", 3: "schema_v3.sql", 4: "schema_v4.sql",
              5: "schema_v5.sql"}
"""Schema version -> script that brings the previous version to it."""


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        # One connection may serve several threads (the HTTP server's); transactions on it
        # must not interleave.
        self._lock = threading.RLock()
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
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself failed: never leave the connection in a transaction.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

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

    def models(self) -> list[tuple[int, str, str]]:
        """(id, key, info JSON) of every embedding space the store holds, oldest first."""
        return [(int(r[0]), str(r[1]), str(r[2]))
                for r in self._db.execute("SELECT id, key, info FROM models ORDER BY id")]

    def setting(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM store_settings WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO store_settings (key, value) VALUES (?,?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    def add_user_model(self, name: str, spec: str, actor: str) -> None:
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO user_models (name, spec, created_at, created_by)"
                    " VALUES (?,?,?,?)",
                    (name, spec, utc_now(), actor),
                )
        except sqlite3.IntegrityError as exc:
            raise ConflictError(f"a face model named {name!r} is already declared") from exc

    def user_models(self) -> dict[str, str]:
        """Declared face models: name -> JSON declaration."""
        return {str(r[0]): str(r[1])
                for r in self._db.execute("SELECT name, spec FROM user_models ORDER BY name")}

    def image_count(self, model_id: int) -> int:
        return int(self._one("SELECT count(*) FROM images WHERE model_id=?", model_id)[0])

    def count_to_move(self, from_model: int, to_model: int) -> int:
        return int(self._one(
            "SELECT count(*) FROM images i WHERE i.model_id=? AND NOT EXISTS"
            " (SELECT 1 FROM images j WHERE j.sha256 = i.sha256 AND j.model_id=?)",
            from_model, to_model,
        )[0])

    def images_to_move(
        self, from_model: int, to_model: int, after: int = 0, limit: int = 256
    ) -> list[tuple[int, str, list[Appearance]]]:
        """Images of ``from_model`` after image id ``after`` not yet analysed by ``to_model``:
        (image id, sha256, appearances), at most ``limit``, in image order."""
        rows = self._db.execute(
            "SELECT i.id, i.sha256 FROM images i WHERE i.model_id=? AND i.id>? AND NOT EXISTS"
            " (SELECT 1 FROM images j WHERE j.sha256 = i.sha256 AND j.model_id=?)"
            " ORDER BY i.id LIMIT ?",
            (from_model, after, to_model, limit),
        ).fetchall()
        return [(int(r[0]), str(r[1]), self.image_appearances(str(r[1]))) for r in rows]

    def add_moved_image(
        self, analysis: ImageAnalysis, size: int, model_id: int, detector: str, from_model: int
    ) -> None:
        """Store ``analysis`` for ``model_id`` with the appearances the image has under
        ``from_model`` (a gallery moving to another model), in one transaction."""
        with self._tx() as db:
            old = db.execute("SELECT id FROM images WHERE sha256=? AND model_id=?",
                             (analysis.sha256, from_model)).fetchone()
            self._insert_image(db, analysis, size, model_id, detector, utc_now())
            new = db.execute("SELECT id FROM images WHERE sha256=? AND model_id=?",
                             (analysis.sha256, model_id)).fetchone()
            if old is not None:
                db.execute(
                    "INSERT INTO appearances (image_id, source_id, location, fingerprint,"
                    " source_url, page_urls, captured_at, title, record_id, run_id, created_at)"
                    " SELECT ?, source_id, location, fingerprint, source_url, page_urls,"
                    " captured_at, title, record_id, run_id, created_at FROM appearances"
                    " WHERE image_id=? ON CONFLICT(source_id, location, image_id) DO NOTHING",
                    (new[0], old[0]),
                )

    def save_calibration(self, model_id: int, source: str, data: str, actor: str) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO calibrations (model_id, source, data, created_at, created_by)"
                " VALUES (?,?,?,?,?)",
                (model_id, source, data, utc_now(), actor),
            )
        return int(cur.lastrowid or 0)

    def calibration(self, model_id: int) -> str | None:
        row = self._db.execute(
            "SELECT data FROM calibrations WHERE model_id=? ORDER BY id DESC LIMIT 1",
            (model_id,),
        ).fetchone()
        return None if row is None else str(row[0])

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
            self._insert_image(db, analysis, size, model_id, detector, now)
            self._appearances(db, analysis.sha256, model_id, source_id, run_id, found_at, now)

    @staticmethod
    def _insert_image(
        db: sqlite3.Connection, analysis: ImageAnalysis, size: int, model_id: int,
        detector: str, now: str,
    ) -> None:
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

    def searchable_faces(self, model_id: int, min_quality: float) -> int:
        return int(self._one("SELECT count(*) FROM faces WHERE model_id=? AND quality>=?",
                             model_id, min_quality)[0])

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

    def source_faces(self, source: str, model_id: int) -> list[LocatedFace]:
        """Every face of ``model_id`` seen in ``source``, by location then ordinal."""
        rows = self._db.execute(
            "SELECT a.location, f.id, f.ordinal, f.quality, f.embedding FROM faces f"
            " JOIN appearances a ON a.image_id = f.image_id"
            " WHERE a.source_id = ? AND f.model_id = ? ORDER BY a.location, f.ordinal",
            (self.get_source(source).id, model_id),
        ).fetchall()
        return [
            LocatedFace(r[0], r[1], r[2], r[3], np.frombuffer(r[4], dtype="<f4").astype(np.float32))
            for r in rows
        ]

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

    def audit_rows(self, query: AuditQuery | None = None) -> list[AuditRow]:
        """Events in id order, all of them or those matching ``query``."""
        q = query or AuditQuery()
        where: list[str] = ["id > ?"]
        args: list[Any] = [q.after_id]
        for column, value, op in (("actor", q.actor, "="), ("case_ref", q.case_ref, "="),
                                  ("action", q.action, "="), ("at", q.since, ">="),
                                  ("at", q.until, "<")):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        sql = f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY id"
        if q.limit is not None:
            sql += f" LIMIT {int(q.limit)}"
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
            for r in self._db.execute(sql, args)
        ]

    # -- users, tokens, sessions -------------------------------------------------------------
    _USER_SQL = (
        "SELECT u.*, (SELECT count(*) FROM tokens t WHERE t.user_id = u.id"
        " AND t.revoked_at IS NULL) AS active_tokens FROM users u"
    )

    def add_user(self, name: str, role: str, actor: str) -> UserRow:
        try:
            with self._tx() as db:
                cur = db.execute(
                    "INSERT INTO users (name, role, created_at, created_by) VALUES (?,?,?,?)",
                    (name, role, utc_now(), actor),
                )
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise ConflictError(f"a user named {name!r} already exists") from exc
            raise PolicyError(f"user rejected: {exc}") from exc
        return self._user_row(self._one(self._USER_SQL + " WHERE u.id=?", cur.lastrowid))

    def get_user(self, name: str) -> UserRow:
        row = self._db.execute(self._USER_SQL + " WHERE u.name=?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no user named {name!r}; see 'facetrail users list'")
        return self._user_row(row)

    def list_users(self) -> list[UserRow]:
        return [
            self._user_row(r) for r in self._db.execute(self._USER_SQL + " ORDER BY u.name")
        ]

    @staticmethod
    def _user_row(row: sqlite3.Row) -> UserRow:
        return UserRow(
            id=row["id"], name=row["name"], role=row["role"], created_at=row["created_at"],
            created_by=row["created_by"], active_tokens=row["active_tokens"],
        )

    def add_token(self, user_id: int, token_hash: str) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO tokens (user_id, token_hash, created_at) VALUES (?,?,?)",
                (user_id, token_hash, utc_now()),
            )
        return int(cur.lastrowid or 0)

    def revoke_tokens(self, user_id: int) -> int:
        """Revoke every live token of a user (their sessions end with them)."""
        now = utc_now()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tokens SET revoked_at=? WHERE user_id=? AND revoked_at IS NULL",
                (now, user_id),
            )
            db.execute(
                "UPDATE sessions SET ended_at=? WHERE ended_at IS NULL AND token_id IN"
                " (SELECT id FROM tokens WHERE user_id=?)",
                (now, user_id),
            )
        return cur.rowcount

    def credential(self, token_hash: str) -> Credential | None:
        row = self._db.execute(
            "SELECT id, user_id FROM tokens WHERE token_hash=? AND revoked_at IS NULL",
            (token_hash,),
        ).fetchone()
        if row is None:
            return None
        user = self._user_row(self._one(self._USER_SQL + " WHERE u.id=?", row["user_id"]))
        return Credential(user=user, token_id=row["id"])

    def add_session(self, id_hash: str, token_id: int, csrf: str, expires_at: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions (id_hash, token_id, csrf, created_at, expires_at)"
                " VALUES (?,?,?,?,?)",
                (id_hash, token_id, csrf, utc_now(), expires_at),
            )

    def session(self, id_hash: str, now: str) -> Credential | None:
        row = self._db.execute(
            "SELECT s.token_id, s.csrf, t.user_id FROM sessions s"
            " JOIN tokens t ON t.id = s.token_id"
            " WHERE s.id_hash=? AND s.ended_at IS NULL AND s.expires_at > ?"
            " AND t.revoked_at IS NULL",
            (id_hash, now),
        ).fetchone()
        if row is None:
            return None
        user = self._user_row(self._one(self._USER_SQL + " WHERE u.id=?", row["user_id"]))
        return Credential(user=user, token_id=row["token_id"], csrf=row["csrf"])

    def end_session(self, id_hash: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE sessions SET ended_at=? WHERE id_hash=? AND ended_at IS NULL",
                (utc_now(), id_hash),
            )

    # -- retention, jobs --------------------------------------------------------------------
    def set_retention(self, name: str, retention_days: int | None) -> SourceRow:
        source = self.get_source(name)
        try:
            with self._tx() as db:
                db.execute(
                    "UPDATE sources SET retention_days=? WHERE id=?", (retention_days, source.id)
                )
        except sqlite3.IntegrityError as exc:
            raise PolicyError(f"retention rejected: {exc}") from exc
        return self.get_source(name)

    _JOB_SQL = "SELECT j.*, s.name AS source FROM jobs j JOIN sources s ON s.id = j.source_id"
    UNFINISHED = ("queued", "running")

    def add_job(self, source_id: int, paths: Sequence[str], actor: str) -> JobRow:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO jobs (source_id, paths, status, created_by, created_at)"
                " VALUES (?,?,?,?,?)",
                (source_id, json.dumps(list(paths)), "queued", actor, utc_now()),
            )
        return self.get_job(int(cur.lastrowid or 0))

    def get_job(self, job_id: int) -> JobRow:
        row = self._db.execute(self._JOB_SQL + " WHERE j.id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no ingest job {job_id}")
        return self._job_row(row)

    def list_jobs(self, unfinished: bool = False, limit: int = 200) -> list[JobRow]:
        """Newest first; ``unfinished``: queued and running ones, oldest first."""
        if unfinished:
            sql = self._JOB_SQL + " WHERE j.status IN ('queued', 'running') ORDER BY j.id"
        else:
            sql = self._JOB_SQL + " ORDER BY j.id DESC"
        return [self._job_row(r) for r in self._db.execute(f"{sql} LIMIT ?", (limit,))]

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
            if status not in self.UNFINISHED:
                sets.append("finished_at=?")
                args.append(utc_now())
        if progress is not None:
            sets.append("progress=?")
            args.append(json.dumps(progress))
        if run_id is not None:
            sets.append("run_ids=json_insert(run_ids, '$[#]', ?)")
            args.append(run_id)
        if error is not None:
            sets.append("error=?")
            args.append(error)
        if started:
            sets.append("attempts=attempts+1")
            sets.append("started_at=coalesce(started_at, ?)")
            args.append(utc_now())
        if sets:
            with self._tx() as db:
                db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=?", (*args, job_id))
        return self.get_job(job_id)

    @staticmethod
    def _job_row(row: sqlite3.Row) -> JobRow:
        return JobRow(
            id=row["id"], source=row["source"], paths=tuple(json.loads(row["paths"])),
            status=row["status"], created_by=row["created_by"], created_at=row["created_at"],
            started_at=row["started_at"], finished_at=row["finished_at"],
            attempts=row["attempts"], run_ids=tuple(json.loads(row["run_ids"])),
            progress=json.loads(row["progress"]), error=row["error"],
        )

    # -- probes, searches, reviews ----------------------------------------------------------
    def add_probe(self, probe: ProbeRow) -> None:
        faces = [{"box": list(f.box), "det_score": f.det_score, "quality": f.quality}
                 for f in probe.faces]
        with self._tx() as db:
            db.execute(
                "INSERT INTO probes (sha256, bytes, width, height, format, faces, created_at,"
                " created_by) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(sha256) DO NOTHING",
                (probe.sha256, probe.bytes, probe.width, probe.height, probe.format,
                 json.dumps(faces), probe.created_at, probe.created_by),
            )

    def get_probe(self, sha256: str) -> ProbeRow:
        row = self._db.execute("SELECT * FROM probes WHERE sha256=?", (sha256,)).fetchone()
        if row is None:
            raise NotFoundError(f"no probe with sha256 {sha256}; upload it first")
        faces = tuple(
            ProbeFace(box=(f["box"][0], f["box"][1], f["box"][2], f["box"][3]),
                      det_score=f["det_score"], quality=f["quality"])
            for f in json.loads(row["faces"])
        )
        return ProbeRow(
            sha256=row["sha256"], bytes=row["bytes"], width=row["width"], height=row["height"],
            format=row["format"], faces=faces, created_at=row["created_at"],
            created_by=row["created_by"],
        )

    def add_search(
        self, user_id: int, case_ref: str, purpose: str, probe_sha256: str, probe_face: int,
        audit_id: int, result: dict[str, Any], candidates: Sequence[tuple[int, int, float]],
    ) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO searches (user_id, case_ref, purpose, probe_sha256, probe_face,"
                " audit_id, result, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (user_id, case_ref, purpose, probe_sha256, probe_face, audit_id,
                 json.dumps(result), utc_now()),
            )
            search_id = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT INTO search_candidates (search_id, rank, face_id, score)"
                " VALUES (?,?,?,?)",
                [(search_id, rank, face_id, score) for rank, face_id, score in candidates],
            )
        return search_id

    _SEARCH_SQL = (
        "SELECT s.*, u.name AS actor,"
        " (SELECT count(*) FROM search_candidates c WHERE c.search_id = s.id) AS n_candidates,"
        " (SELECT count(*) FROM search_candidates c WHERE c.search_id = s.id AND NOT EXISTS"
        "   (SELECT 1 FROM reviews r WHERE r.search_id = c.search_id AND r.face_id = c.face_id)"
        " ) AS n_pending"
        " FROM searches s JOIN users u ON u.id = s.user_id"
    )

    def get_search(self, search_id: int) -> SearchRow:
        row = self._db.execute(self._SEARCH_SQL + " WHERE s.id=?", (search_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no search {search_id}")
        return self._search_row(row, with_result=True)

    def list_searches(
        self, case_ref: str | None = None, user_id: int | None = None,
        pending_for: int | None = None, limit: int = 200,
    ) -> list[SearchRow]:
        """Newest first. ``pending_for``: searches by others with unreviewed candidates."""
        where: list[str] = []
        args: list[Any] = []
        if case_ref is not None:
            where.append("s.case_ref = ?")
            args.append(case_ref)
        if user_id is not None:
            where.append("s.user_id = ?")
            args.append(user_id)
        sql = self._SEARCH_SQL + (f" WHERE {' AND '.join(where)}" if where else "")
        if pending_for is not None:
            sql = f"SELECT * FROM ({sql}) WHERE user_id != ? AND n_pending > 0"
            args.append(pending_for)
        rows = self._db.execute(f"{sql} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [self._search_row(r, with_result=case_ref is not None) for r in rows]

    @staticmethod
    def _search_row(row: sqlite3.Row, with_result: bool) -> SearchRow:
        return SearchRow(
            id=row["id"], user_id=row["user_id"], actor=row["actor"], case_ref=row["case_ref"],
            purpose=row["purpose"], probe_sha256=row["probe_sha256"],
            probe_face=row["probe_face"], audit_id=row["audit_id"],
            result=json.loads(row["result"]) if with_result else {},
            created_at=row["created_at"], candidates=row["n_candidates"],
            pending=row["n_pending"],
        )

    def add_review(
        self, search_id: int, face_id: int, user_id: int, decision: str, note: str
    ) -> ReviewRow:
        try:
            with self._tx() as db:
                if db.execute(
                    "SELECT 1 FROM reviews WHERE search_id=? AND face_id=? AND user_id=?",
                    (search_id, face_id, user_id),
                ).fetchone():
                    raise ConflictError(
                        f"you have already reviewed candidate {face_id} of search {search_id}"
                    )
                cur = db.execute(
                    "INSERT INTO reviews (search_id, face_id, user_id, decision, note, at)"
                    " VALUES (?,?,?,?,?,?)",
                    (search_id, face_id, user_id, decision, note, utc_now()),
                )
        except sqlite3.IntegrityError as exc:
            raise NotFoundError(
                f"face {face_id} is not a candidate of search {search_id}"
            ) from exc
        return self._review_rows("r.id = ?", (cur.lastrowid,))[0]

    def reviews(self, search_ids: Sequence[int]) -> list[ReviewRow]:
        marks = ",".join("?" * len(search_ids))
        return self._review_rows(f"r.search_id IN ({marks})", tuple(search_ids))

    def _review_rows(self, where: str, args: tuple[Any, ...]) -> list[ReviewRow]:
        rows = self._db.execute(
            "SELECT r.*, u.name AS reviewer FROM reviews r JOIN users u ON u.id = r.user_id"
            f" WHERE {where} ORDER BY r.id",
            args,
        ).fetchall()
        return [
            ReviewRow(id=r["id"], search_id=r["search_id"], face_id=r["face_id"],
                      user_id=r["user_id"], reviewer=r["reviewer"], decision=r["decision"],
                      note=r["note"], at=r["at"])
            for r in rows
        ]

    def image_appearances(self, sha256: str) -> list[Appearance]:
        rows = self._db.execute(
            "SELECT s.name, a.location, a.source_url, a.page_urls, a.captured_at,"
            " a.title, a.record_id FROM appearances a JOIN sources s ON s.id = a.source_id"
            " JOIN images i ON i.id = a.image_id WHERE i.sha256 = ?"
            " GROUP BY s.name, a.location ORDER BY s.name, a.location",
            (sha256,),
        ).fetchall()
        return [
            Appearance(source=a["name"], location=a["location"], source_url=a["source_url"],
                       page_urls=tuple(json.loads(a["page_urls"])),
                       captured_at=a["captured_at"], title=a["title"],
                       record_id=a["record_id"])
            for a in rows
        ]

    def source_roots(self, name: str) -> list[str]:
        """Where a source's items may lie: its uri and every path an ingest of it was given."""
        source = self.get_source(name)
        roots = [source.uri]
        for row in self._db.execute(
            "SELECT paths FROM ingest_runs WHERE source_id=? ORDER BY id", (source.id,)
        ):
            roots += [p for p in json.loads(row[0]) if p not in roots]
        return roots

    # -- reporting --------------------------------------------------------------------------
    def stats(self, model_id: int) -> dict[str, Any]:
        """Counts; images, appearances and faces are those of the model ``model_id``."""
        def count(sql: str, *args: Any) -> int:
            return int(self._db.execute(sql, args).fetchone()[0])

        per_source = [
            dict(r)
            for r in self._db.execute(
                "SELECT s.name AS source, s.kind, s.retention_days,"
                " (SELECT count(*) FROM appearances a JOIN images i ON i.id = a.image_id"
                "   WHERE a.source_id = s.id AND i.model_id = :m) AS appearances,"
                " (SELECT count(DISTINCT a.image_id) FROM appearances a"
                "   JOIN images i ON i.id = a.image_id"
                "   WHERE a.source_id = s.id AND i.model_id = :m) AS images,"
                " (SELECT count(*) FROM ingest_errors e WHERE e.source_id = s.id) AS errors"
                " FROM sources s ORDER BY s.name",
                {"m": model_id},
            )
        ]
        return {
            "sources": count("SELECT count(*) FROM sources"),
            "images": count("SELECT count(*) FROM images WHERE model_id=?", model_id),
            "appearances": count("SELECT count(*) FROM appearances a JOIN images i"
                                 " ON i.id = a.image_id WHERE i.model_id=?", model_id),
            "faces": count("SELECT count(*) FROM faces WHERE model_id=?", model_id),
            "images_without_faces": count(
                "SELECT count(*) FROM images WHERE face_count = 0 AND model_id=?", model_id),
            "errors": count("SELECT count(*) FROM ingest_errors"),
            "searches": count("SELECT count(*) FROM audit WHERE action = 'search'"),
            "ingest_runs": count("SELECT count(*) FROM ingest_runs"),
            "per_source": per_source,
            "faces_by_runtime": dict(
                self._db.execute("SELECT runtime, count(*) FROM faces WHERE model_id=?"
                                 " GROUP BY runtime ORDER BY 1", (model_id,))
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
