"""Organisations, and the sharing of sources between them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facetrail.audit import utc_now
from facetrail.errors import ConflictError, NotFoundError, PolicyError
from facetrail.store.base import OrgRow, ShareRow
from facetrail.store.sql.core import IntegrityViolation, SQLCore

_SHARE_SQL = (
    "SELECT s.name AS source, o.name AS org, x.source_id, x.org_id, x.lawful_basis,"
    " x.purpose, x.created_at, x.created_by FROM source_shares x"
    " JOIN sources s ON s.id = x.source_id JOIN orgs o ON o.id = x.org_id"
)


class OrgTables(SQLCore):
    def add_org(self, name: str, actor: str) -> OrgRow:
        try:
            with self._tx() as db:
                org_id = self._insert(
                    db, "INSERT INTO orgs (name, created_at, created_by) VALUES (?,?,?)",
                    (name, utc_now(), actor),
                )
        except IntegrityViolation as exc:
            if "unique" in str(exc).lower():
                raise ConflictError(f"an organisation named {name!r} already exists") from exc
            raise PolicyError(f"organisation rejected: {exc}") from exc
        return _org_row(self._one("SELECT * FROM orgs WHERE id=?", org_id))

    def get_org(self, name: str) -> OrgRow:
        row = self._db.execute("SELECT * FROM orgs WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no organisation named {name!r}; see 'facetrail orgs list'")
        return _org_row(row)

    def list_orgs(self) -> list[OrgRow]:
        return [_org_row(r) for r in self._db.execute("SELECT * FROM orgs ORDER BY name")]

    def share_source(self, source_id: int, org_id: int, lawful_basis: str, purpose: str,
                     actor: str) -> ShareRow:
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO source_shares (source_id, org_id, lawful_basis, purpose,"
                    " created_at, created_by) VALUES (?,?,?,?,?,?)",
                    (source_id, org_id, lawful_basis, purpose, utc_now(), actor),
                )
        except IntegrityViolation as exc:
            if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
                raise ConflictError("the source is already shared with that organisation"
                                    ) from exc
            raise PolicyError(f"sharing rejected: {exc}") from exc
        return self.shares(source_id, org_id)[0]

    def unshare_source(self, source_id: int, org_id: int) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM source_shares WHERE source_id=? AND org_id=?",
                             (source_id, org_id))
            return cur.rowcount > 0

    def shares(self, source_id: int | None = None, org_id: int | None = None
               ) -> list[ShareRow]:
        where, args = [], []
        for column, value in (("x.source_id", source_id), ("x.org_id", org_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = _SHARE_SQL + (f" WHERE {' AND '.join(where)}" if where else "")
        return [_share_row(r) for r in self._db.execute(sql + " ORDER BY s.name, o.name", args)]

    def visible_source_ids(self, org_id: int) -> list[int]:
        """The sources an organisation owns or has been shared, by id."""
        return [int(r[0]) for r in self._db.execute(
            "SELECT id FROM sources WHERE org_id=? UNION"
            " SELECT source_id FROM source_shares WHERE org_id=? ORDER BY 1",
            (org_id, org_id),
        )]

    def source_face_ids(self, source_ids: Sequence[int], model_id: int) -> np.ndarray:
        """Ids of the faces of ``model_id`` in images that any of ``source_ids`` reached,
        sorted, as int64."""
        if not source_ids:
            return np.zeros(0, dtype=np.int64)
        marks = ",".join("?" * len(source_ids))
        rows = self._db.execute(
            "SELECT DISTINCT f.id FROM faces f JOIN appearances a ON a.image_id = f.image_id"
            f" WHERE f.model_id = ? AND a.source_id IN ({marks}) ORDER BY 1",
            (model_id, *source_ids),
        ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def add_probe_org(self, sha256: str, org_id: int) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO probe_orgs (sha256, org_id) VALUES (?,?)"
                       " ON CONFLICT (sha256, org_id) DO NOTHING", (sha256, org_id))

    def probe_org_ids(self, sha256: str) -> set[int]:
        return {int(r[0]) for r in self._db.execute(
            "SELECT org_id FROM probe_orgs WHERE sha256=?", (sha256,))}


def _org_row(row: Any) -> OrgRow:
    return OrgRow(id=row["id"], name=row["name"], created_at=row["created_at"],
                  created_by=row["created_by"])


def _share_row(row: Any) -> ShareRow:
    return ShareRow(source=row["source"], org=row["org"], source_id=row["source_id"],
                    org_id=row["org_id"], lawful_basis=row["lawful_basis"],
                    purpose=row["purpose"], created_at=row["created_at"],
                    created_by=row["created_by"])
