"""The hash-chained audit log, and counts for reporting."""

from __future__ import annotations

import json
from typing import Any

from facetrail.audit import GENESIS, AuditEvent, chain_hash
from facetrail.store.base import AuditQuery, AuditRow, SourceStats, StoreStats
from facetrail.store.sql.core import SQLCore


class AuditTables(SQLCore):
    def append_audit(self, event: AuditEvent) -> int:
        """Append ``event`` to the chain. Appends are serialised by the dialect's audit lock
        (several processes and hosts may write), and ids are given here, without gaps, so that
        a missing event is visible as a missing id."""
        canonical = event.canonical()
        with self._tx() as db:
            self.dialect.lock_audit(db.raw)
            row = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            prev_id, prev = (int(row[0]), str(row[1])) if row else (0, GENESIS)
            db.execute(
                "INSERT INTO audit (id, at, actor, action, case_ref, purpose, details,"
                " prev_hash, hash, org) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (prev_id + 1, event.at, event.actor, event.action, event.case_ref,
                 event.purpose,
                 json.dumps(event.details, sort_keys=True, separators=(",", ":")), prev,
                 chain_hash(prev, canonical), event.org),
            )
        return prev_id + 1

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
        if q.org is not None:
            where.append("(org = ? OR org IS NULL)" if q.with_deployment else "org = ?")
            args.append(q.org)
        sql = f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY id"
        if q.limit is not None:
            sql += f" LIMIT {int(q.limit)}"
        return [
            AuditRow(
                id=r["id"],
                event=AuditEvent(
                    actor=r["actor"], action=r["action"], details=json.loads(r["details"]),
                    case_ref=r["case_ref"], purpose=r["purpose"], at=r["at"], org=r["org"],
                ),
                prev_hash=r["prev_hash"],
                hash=r["hash"],
            )
            for r in self._db.execute(sql, args)
        ]

    def stats(self, model_id: int) -> StoreStats:
        """Counts; images, appearances and faces are those of the model ``model_id``."""
        def count(sql: str, *args: Any) -> int:
            return int(self._db.execute(sql, args).fetchone()[0])

        per_source = tuple(
            SourceStats(source=r[0], kind=r[1], retention_days=r[2], appearances=int(r[3]),
                        images=int(r[4]), errors=int(r[5]))
            for r in self._db.execute(
                "SELECT s.name, s.kind, s.retention_days,"
                " (SELECT count(*) FROM appearances a JOIN images i ON i.id = a.image_id"
                "   WHERE a.source_id = s.id AND i.model_id = ?),"
                " (SELECT count(DISTINCT a.image_id) FROM appearances a"
                "   JOIN images i ON i.id = a.image_id"
                "   WHERE a.source_id = s.id AND i.model_id = ?),"
                " (SELECT count(*) FROM ingest_errors e WHERE e.source_id = s.id)"
                " FROM sources s ORDER BY s.name",
                (model_id, model_id),
            )
        )
        return StoreStats(
            sources=count("SELECT count(*) FROM sources"),
            images=count("SELECT count(*) FROM images WHERE model_id=?", model_id),
            appearances=count("SELECT count(*) FROM appearances a JOIN images i"
                              " ON i.id = a.image_id WHERE i.model_id=?", model_id),
            faces=count("SELECT count(*) FROM faces WHERE model_id=?", model_id),
            images_without_faces=count(
                "SELECT count(*) FROM images WHERE face_count = 0 AND model_id=?", model_id),
            errors=count("SELECT count(*) FROM ingest_errors"),
            searches=count("SELECT count(*) FROM audit WHERE action = 'search'"),
            ingest_runs=count("SELECT count(*) FROM ingest_runs"),
            per_source=per_source,
            faces_by_runtime={
                str(r[0]): int(r[1])
                for r in self._db.execute("SELECT runtime, count(*) FROM faces WHERE model_id=?"
                                          " GROUP BY runtime ORDER BY 1", (model_id,))
            },
        )
