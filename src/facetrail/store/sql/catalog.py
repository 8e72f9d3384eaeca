"""Sources, face models, store settings and calibrations."""

from __future__ import annotations

from typing import Any

from facetrail.audit import utc_now
from facetrail.errors import ConflictError, NotFoundError, PolicyError
from facetrail.faces.base import ModelInfo
from facetrail.store.base import SourceRow, SourceSpec
from facetrail.store.sql.core import IntegrityViolation, SQLCore

SOURCE_SQL = "SELECT s.*, o.name AS org FROM sources s JOIN orgs o ON o.id = s.org_id"


class CatalogTables(SQLCore):
    # -- sources ----------------------------------------------------------------------------
    def add_source(self, spec: SourceSpec, actor: str) -> SourceRow:
        try:
            with self._tx() as db:
                source_id = self._insert(
                    db,
                    "INSERT INTO sources (name, kind, uri, lawful_basis, purpose,"
                    " retention_days, created_at, created_by, org_id)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    (spec.name, spec.kind, spec.uri, spec.lawful_basis, spec.purpose,
                     spec.retention_days, utc_now(), actor, spec.org_id),
                )
        except IntegrityViolation as exc:
            if "unique" in str(exc).lower():
                raise ConflictError(f"a source named {spec.name!r} already exists") from exc
            raise PolicyError(f"source rejected: {exc}") from exc
        return source_row(self._one(SOURCE_SQL + " WHERE s.id=?", source_id))

    def get_source(self, name: str) -> SourceRow:
        row = self._db.execute(SOURCE_SQL + " WHERE s.name=?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no source named {name!r}; see 'facetrail sources list'")
        return source_row(row)

    def list_sources(self) -> list[SourceRow]:
        rows = self._db.execute(SOURCE_SQL + " ORDER BY s.name").fetchall()
        return [source_row(r) for r in rows]

    def set_retention(self, name: str, retention_days: int | None) -> SourceRow:
        source = self.get_source(name)
        try:
            with self._tx() as db:
                db.execute(
                    "UPDATE sources SET retention_days=? WHERE id=?", (retention_days, source.id)
                )
        except IntegrityViolation as exc:
            raise PolicyError(f"retention rejected: {exc}") from exc
        return self.get_source(name)

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
        except IntegrityViolation as exc:
            raise ConflictError(f"a face model named {name!r} is already declared") from exc

    def user_models(self) -> dict[str, str]:
        """Declared face models: name -> JSON declaration."""
        return {str(r[0]): str(r[1])
                for r in self._db.execute("SELECT name, spec FROM user_models ORDER BY name")}

    def save_calibration(self, model_id: int, source: str, data: str, actor: str) -> int:
        with self._tx() as db:
            return self._insert(
                db,
                "INSERT INTO calibrations (model_id, source, data, created_at, created_by)"
                " VALUES (?,?,?,?,?)",
                (model_id, source, data, utc_now(), actor),
            )

    def calibration(self, model_id: int) -> str | None:
        row = self._db.execute(
            "SELECT data FROM calibrations WHERE model_id=? ORDER BY id DESC LIMIT 1",
            (model_id,),
        ).fetchone()
        return None if row is None else str(row[0])


def source_row(row: Any) -> SourceRow:
    return SourceRow(
        id=row["id"], name=row["name"], kind=row["kind"], uri=row["uri"],
        lawful_basis=row["lawful_basis"], purpose=row["purpose"],
        retention_days=row["retention_days"], created_at=row["created_at"],
        created_by=row["created_by"], org_id=row["org_id"], org=row["org"],
    )
