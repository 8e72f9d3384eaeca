"""Probes, searches kept as records, and reviews of their candidates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from facetrail.audit import utc_now
from facetrail.errors import ConflictError, NotFoundError
from facetrail.records import ProbeFace
from facetrail.store.base import ProbeRow, ReviewRow, SearchRow
from facetrail.store.sql.core import IntegrityViolation, SQLCore

_SEARCH_SQL = (
    "SELECT s.*,"
    " (SELECT count(*) FROM search_candidates c WHERE c.search_id = s.id) AS n_candidates,"
    " (SELECT count(*) FROM search_candidates c WHERE c.search_id = s.id AND NOT EXISTS"
    "   (SELECT 1 FROM reviews r WHERE r.search_id = c.search_id AND r.face_id = c.face_id)"
    "   AND NOT EXISTS (SELECT 1 FROM erased_faces e WHERE e.face_id = c.face_id)"
    " ) AS n_pending"
    " FROM searches s"
)


class CaseTables(SQLCore):
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
        self, user_id: int | None, actor: str, case_ref: str, purpose: str, probe_sha256: str,
        probe_face: int, audit_id: int, result: dict[str, Any],
        candidates: Sequence[tuple[int, int, float]], org_id: int = 1,
    ) -> int:
        with self._tx() as db:
            search_id = self._insert(
                db,
                "INSERT INTO searches (user_id, actor, case_ref, purpose, probe_sha256,"
                " probe_face, audit_id, result, created_at, org_id)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (user_id, actor, case_ref, purpose, probe_sha256, probe_face, audit_id,
                 json.dumps(result), utc_now(), org_id),
            )
            db.executemany(
                "INSERT INTO search_candidates (search_id, rank, face_id, score)"
                " VALUES (?,?,?,?)",
                [(search_id, rank, face_id, score) for rank, face_id, score in candidates],
            )
        return search_id

    def get_search(self, search_id: int) -> SearchRow:
        row = self._db.execute(_SEARCH_SQL + " WHERE s.id=?", (search_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no search {search_id}")
        return _search_row(row, with_result=True)

    def list_searches(
        self, case_ref: str | None = None, actor: str | None = None,
        pending_for: str | None = None, limit: int = 200, org_id: int | None = None,
    ) -> list[SearchRow]:
        """Newest first. ``actor``: searches by this actor; ``pending_for``: searches by other
        actors than this one with unreviewed candidates."""
        where: list[str] = []
        args: list[Any] = []
        if case_ref is not None:
            where.append("s.case_ref = ?")
            args.append(case_ref)
        if actor is not None:
            where.append("s.actor = ?")
            args.append(actor)
        if org_id is not None:
            where.append("s.org_id = ?")
            args.append(org_id)
        sql = _SEARCH_SQL + (f" WHERE {' AND '.join(where)}" if where else "")
        if pending_for is not None:
            sql = f"SELECT * FROM ({sql}) AS q WHERE actor != ? AND n_pending > 0"
            args.append(pending_for)
        rows = self._db.execute(f"{sql} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_search_row(r, with_result=case_ref is not None) for r in rows]

    def add_review(
        self, search_id: int, face_id: int, user_id: int | None, actor: str, decision: str,
        note: str,
    ) -> ReviewRow:
        try:
            with self._tx() as db:
                if db.execute(
                    "SELECT 1 FROM reviews WHERE search_id=? AND face_id=? AND actor=?",
                    (search_id, face_id, actor),
                ).fetchone():
                    raise ConflictError(
                        f"you have already reviewed candidate {face_id} of search {search_id}"
                    )
                review_id = self._insert(
                    db,
                    "INSERT INTO reviews (search_id, face_id, user_id, actor, decision, note, at)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (search_id, face_id, user_id, actor, decision, note, utc_now()),
                )
        except IntegrityViolation as exc:
            raise NotFoundError(
                f"face {face_id} is not a candidate of search {search_id}"
            ) from exc
        return self._review_rows("r.id = ?", (review_id,))[0]

    def reviews(self, search_ids: Sequence[int]) -> list[ReviewRow]:
        if not search_ids:
            return []
        marks = ",".join("?" * len(search_ids))
        return self._review_rows(f"r.search_id IN ({marks})", tuple(search_ids))

    def _review_rows(self, where: str, args: tuple[Any, ...]) -> list[ReviewRow]:
        rows = self._db.execute(
            "SELECT r.*, r.actor AS reviewer FROM reviews r"
            f" WHERE {where} ORDER BY r.id",
            args,
        ).fetchall()
        return [
            ReviewRow(id=r["id"], search_id=r["search_id"], face_id=r["face_id"],
                      user_id=r["user_id"], reviewer=r["reviewer"], decision=r["decision"],
                      note=r["note"], at=r["at"])
            for r in rows
        ]


def _search_row(row: Any, with_result: bool) -> SearchRow:
    return SearchRow(
        id=row["id"], user_id=row["user_id"], actor=row["actor"], case_ref=row["case_ref"],
        purpose=row["purpose"], probe_sha256=row["probe_sha256"],
        probe_face=row["probe_face"], audit_id=row["audit_id"],
        result=json.loads(row["result"]) if with_result else {},
        created_at=row["created_at"], candidates=row["n_candidates"],
        pending=row["n_pending"], org_id=row["org_id"],
    )
