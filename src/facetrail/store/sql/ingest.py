"""Ingest runs, images, their faces and appearances, ingest errors; faces for the index."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from facetrail.audit import utc_now
from facetrail.errors import ConflictError
from facetrail.records import Appearance, ImageAnalysis, ImageInfo, Provenance
from facetrail.store.base import ErrorRow, FaceRow, LocatedFace, RunCounts, RunRow, RunScope
from facetrail.store.sql.catalog import CatalogTables
from facetrail.store.sql.core import Conn


class IngestTables(CatalogTables):
    # -- runs -------------------------------------------------------------------------------
    def start_run(self, source_id: int, paths: Sequence[str], actor: str, holder: str,
                  stale_before: str) -> int:
        with self._tx() as db:
            # Runs whose holder stopped renewing their lease were interrupted, on any host.
            db.execute(
                "UPDATE ingest_runs SET status='interrupted' WHERE status='running'"
                " AND (heartbeat_at IS NULL OR heartbeat_at < ?)", (stale_before,),
            )
            live = db.execute(
                "SELECT id, holder, started_at FROM ingest_runs WHERE status='running'"
                " AND source_id=? ORDER BY id LIMIT 1", (source_id,),
            ).fetchone()
            if live is not None:
                raise ConflictError(
                    f"this source is being ingested already (run {live['id']}, by "
                    f"{live['holder']}, since {live['started_at']}); wait for it to finish"
                )
            now = utc_now()
            return self._insert(
                db,
                "INSERT INTO ingest_runs (source_id, paths, started_at, status, os_user, pid,"
                " holder, heartbeat_at) VALUES (?,?,?,?,?,?,?,?)",
                (source_id, json.dumps(list(paths)), now, "running", actor, os.getpid(),
                 holder, now),
            )

    def running_holders(self) -> list[str]:
        return [str(r[0]) for r in self._db.execute(
            "SELECT DISTINCT holder FROM ingest_runs WHERE status='running'"
            " AND holder IS NOT NULL ORDER BY 1")]

    def interrupt_runs(self, holders: Sequence[str]) -> int:
        if not holders:
            return 0
        marks = ",".join("?" * len(holders))
        with self._tx() as db:
            cur = db.execute("UPDATE ingest_runs SET status='interrupted' WHERE status='running'"
                             f" AND holder IN ({marks})", tuple(holders))
            return cur.rowcount

    def renew_run(self, run_id: int, holder: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE ingest_runs SET heartbeat_at=? WHERE id=? AND holder=?"
                " AND status='running'", (utc_now(), run_id, holder),
            )
            return cur.rowcount > 0

    def finish_run(self, run_id: int, status: str, counts: RunCounts) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE ingest_runs SET status=?, finished_at=?, items=?, images_new=?,"
                " duplicates=?, skipped=?, faces=?, errors=?, suppressed=?, gone=? WHERE id=?",
                (status, utc_now(), counts.items, counts.images_new, counts.duplicates,
                 counts.skipped, counts.faces, counts.errors, counts.suppressed, counts.gone,
                 run_id),
            )

    def runs(self) -> list[RunRow]:
        """Every ingest run, oldest first."""
        rows = self._db.execute(
            "SELECT r.id, s.name, r.paths, r.status, r.started_at, r.finished_at, r.items,"
            " r.images_new, r.duplicates, r.skipped, r.faces, r.errors, r.suppressed, r.gone"
            " FROM ingest_runs r"
            " JOIN sources s ON s.id = r.source_id ORDER BY r.id"
        ).fetchall()
        return [
            RunRow(id=int(r[0]), source=r[1], paths=tuple(json.loads(r[2])), status=r[3],
                   started_at=r[4], finished_at=r[5],
                   counts=RunCounts(*(int(n) for n in tuple(r)[6:])))
            for r in rows
        ]

    # -- images and appearances -------------------------------------------------------------
    def seen(self, source_id: int, location: str, fingerprint: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM appearances WHERE source_id=? AND location=? AND fingerprint=?"
            " LIMIT 1",
            (source_id, location, fingerprint),
        ).fetchone()
        return row is not None

    def touch(
        self, source_id: int, run_id: int, seen: Sequence[tuple[str, str, str | None]]
    ) -> None:
        if not seen:
            return
        now = utc_now()
        with self._tx() as db:
            db.executemany(
                "UPDATE appearances SET seen_run=?, listing=?, gone_at=NULL, gone_run=NULL"
                " WHERE source_id=? AND location=? AND fingerprint=?",
                [(run_id, listing, source_id, location, fp) for location, fp, listing in seen],
            )
            # Whatever else was current at such a location was replaced there.
            db.executemany(
                "UPDATE appearances SET gone_at=?, gone_run=? WHERE source_id=? AND location=?"
                " AND gone_at IS NULL AND (fingerprint IS NULL OR fingerprint<>?)",
                [(now, run_id, source_id, location, fp) for location, fp, _ in seen],
            )

    def mark_gone(self, source_id: int, run_id: int, scopes: Sequence[RunScope]) -> int:
        under: list[str] = []
        args: list[Any] = [utc_now(), run_id, source_id, run_id]
        for scope in scopes:
            # substr, not LIKE: no wildcards to escape, and case-sensitive on both engines.
            inside = scope.path.rstrip("/") + "/"
            column = "listing" if scope.listed else "location"
            under.append(
                ("" if scope.listed else "listing IS NULL AND record_id IS NULL AND ")
                + f"({column}=? OR substr({column}, 1, length(CAST(? AS TEXT)))=?)"
            )
            args += [scope.path, inside, inside]
        with self._tx() as db:
            if under:
                # An error this run at the item, or at the folder, manifest or archive it lies
                # in (a broken record, a bad row, an unreadable folder), leaves it as it was.
                db.execute(
                    "UPDATE appearances SET gone_at=?, gone_run=? WHERE source_id=?"
                    " AND gone_at IS NULL AND coalesce(seen_run, 0)<>?"
                    f" AND (({') OR ('.join(under)}))"
                    " AND NOT EXISTS (SELECT 1 FROM ingest_errors e"
                    " WHERE e.source_id=appearances.source_id AND e.run_id=?"
                    " AND (substr(appearances.location, 1, length(e.location))=e.location"
                    " OR substr(e.location, 1, length(appearances.listing))"
                    "=appearances.listing))",
                    (*args, run_id),
                )
            return int(db.execute(
                "SELECT count(*) FROM appearances WHERE source_id=? AND gone_run=?",
                (source_id, run_id),
            ).fetchone()[0])

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
    ) -> bool:
        now = utc_now()
        with self._tx() as db:
            new = insert_image(db, analysis, size, model_id, detector, now)
            _appearances(db, analysis.sha256, model_id, source_id, run_id, found_at, now)
            return new

    def add_appearances(
        self,
        sha256: str,
        model_id: int,
        source_id: int,
        run_id: int,
        found_at: Sequence[tuple[Provenance, str | None]],
    ) -> int:
        with self._tx() as db:
            return _appearances(db, sha256, model_id, source_id, run_id, found_at, utc_now())

    def image_appearances(self, sha256: str) -> list[Appearance]:
        """Where an image was seen, under any model, by source then location."""
        rows = self._db.execute(
            "SELECT DISTINCT s.name, a.location, a.source_url, a.page_urls, a.captured_at,"
            " a.title, a.record_id, a.gone_at FROM appearances a"
            " JOIN sources s ON s.id = a.source_id"
            " JOIN images i ON i.id = a.image_id WHERE i.sha256 = ?"
            " ORDER BY s.name, a.location",
            (sha256,),
        ).fetchall()
        return [appearance(a) for a in rows]

    def source_roots(self, name: str) -> list[str]:
        """Where a source's items may lie: its uri and every path an ingest of it was given."""
        source = self.get_source(name)
        roots = [source.uri]
        for row in self._db.execute(
            "SELECT paths FROM ingest_runs WHERE source_id=? ORDER BY id", (source.id,)
        ):
            roots += [p for p in json.loads(row[0]) if p not in roots]
        return roots

    # -- moving a gallery to another face model ---------------------------------------------
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
            insert_image(db, analysis, size, model_id, detector, utc_now())
            new = db.execute("SELECT id FROM images WHERE sha256=? AND model_id=?",
                             (analysis.sha256, model_id)).fetchone()
            if old is not None:
                db.execute(
                    "INSERT INTO appearances (image_id, source_id, location, fingerprint,"
                    " source_url, page_urls, captured_at, title, record_id, run_id, created_at,"
                    " gone_at, gone_run, seen_run, listing)"
                    " SELECT ?, source_id, location, fingerprint, source_url, page_urls,"
                    " captured_at, title, record_id, run_id, created_at, gone_at, gone_run,"
                    " seen_run, listing FROM appearances"
                    " WHERE image_id=? ON CONFLICT(source_id, location, image_id) DO NOTHING",
                    (new[0], old[0]),
                )

    # -- errors -----------------------------------------------------------------------------
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

    def clear_error(self, source_id: int, location: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM ingest_errors WHERE source_id=? AND location=?",
                       (source_id, location))

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
            vectors = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4").reshape(
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
            tuple(int(i) for i in face_ids),
        ).fetchall()
        image_ids = sorted({r["image_id"] for r in rows})
        seen_at: dict[int, list[Appearance]] = {i: [] for i in image_ids}
        if image_ids:
            marks = ",".join("?" * len(image_ids))
            for a in self._db.execute(
                "SELECT a.image_id, s.name, a.location, a.source_url, a.page_urls,"
                " a.captured_at, a.title, a.record_id, a.gone_at FROM appearances a"
                f" JOIN sources s ON s.id = a.source_id WHERE a.image_id IN ({marks})"
                " ORDER BY a.image_id, s.name, a.location",
                tuple(image_ids),
            ):
                seen_at[a["image_id"]].append(appearance(a))
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
            LocatedFace(r[0], r[1], r[2], r[3],
                        np.frombuffer(bytes(r[4]), dtype="<f4").astype(np.float32))
            for r in rows
        ]


def insert_image(
    db: Conn, analysis: ImageAnalysis, size: int, model_id: int, detector: str, now: str,
) -> bool:
    """Insert an image and its faces, unless the image is already stored for the model;
    whether it was inserted."""
    row = db.execute(
        "INSERT INTO images (sha256, model_id, width, height, format, bytes,"
        " face_count, created_at) VALUES (?,?,?,?,?,?,?,?)"
        " ON CONFLICT(sha256, model_id) DO NOTHING RETURNING id",
        (analysis.sha256, model_id, analysis.width, analysis.height, analysis.format,
         size, len(analysis.faces), now),
    ).fetchone()
    if row is None:
        return False
    image_id = int(row[0])
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
    db.executemany(
        "INSERT INTO suppressed_faces (image_sha256, box) VALUES (?,?) ON CONFLICT DO NOTHING",
        [(analysis.sha256, json.dumps(list(box), separators=(",", ":")))  # as erased_faces'
         for box in analysis.hidden])
    return True


def _appearances(
    db: Conn,
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
            " page_urls, captured_at, title, record_id, run_id, created_at, seen_run, listing)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(source_id, location, image_id) DO UPDATE SET"
            " fingerprint=excluded.fingerprint",
            (image_id, source_id, prov.location, fingerprint, prov.source_url,
             json.dumps(list(prov.page_urls)), prov.captured_at, prov.title,
             prov.record_id, run_id, now, run_id, prov.listing),
        )
        added += cur.rowcount
        # The image is current here (under every face model it was analysed by), and the
        # only one: another image at this location was replaced by it.
        db.execute(
            "UPDATE appearances SET fingerprint=?, seen_run=?, listing=?, gone_at=NULL,"
            " gone_run=NULL WHERE source_id=? AND location=?"
            " AND image_id IN (SELECT id FROM images WHERE sha256=?)",
            (fingerprint, run_id, prov.listing, source_id, prov.location, sha256),
        )
        db.execute(
            "UPDATE appearances SET gone_at=?, gone_run=? WHERE source_id=? AND location=?"
            " AND gone_at IS NULL AND image_id NOT IN (SELECT id FROM images WHERE sha256=?)",
            (now, run_id, source_id, prov.location, sha256),
        )
        db.execute(
            "DELETE FROM ingest_errors WHERE source_id=? AND location=?",
            (source_id, prov.location),
        )
    return added


def appearance(row: Any) -> Appearance:
    return Appearance(
        source=row["name"], location=row["location"], source_url=row["source_url"],
        page_urls=tuple(json.loads(row["page_urls"])), captured_at=row["captured_at"],
        title=row["title"], record_id=row["record_id"], gone_at=row["gone_at"],
    )
