"""PostgreSQL: the store for a service with many writers (psycopg 3).

The same statements as SQLite (``store/sql/``) over the same schema versions
(``pg_schema_vN.sql`` mirror ``schema_vN.sql``). Several server processes and ingest workers
on several hosts may write at once: every write is a short transaction at READ COMMITTED;
audit appends, which must form one chain, take a transaction-scoped advisory lock, as do
migrations, so that processes starting together migrate once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from facetrail.errors import MissingExtraError, StoreError, StoreUnavailableError
from facetrail.store.sql import SQLStore

MIGRATIONS = {v: f"pg_schema_v{v}.sql" for v in range(1, 11)}
_AUDIT_LOCK = 0x66616365  # advisory lock keys of this store: "face", "facf", "facg"
_MIGRATION_LOCK = 0x66616366
_RATE_LOCK = 0x66616367
_PLACEHOLDER = re.compile(r"\?")


class Row(tuple[Any, ...]):
    """A result row addressable by position and by column name, like ``sqlite3.Row``."""

    names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self.names)


def _row_factory(cursor: Any) -> Any:
    names = {c.name: i for i, c in enumerate(cursor.description or ())}

    def make(values: Any) -> Row:
        row = Row(values)
        row.names = names
        return row

    return make


class PostgresDialect:
    name = "postgresql"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise MissingExtraError("psycopg", "postgres") from exc
        self._psycopg = psycopg
        self.url = url
        self.where = redact(url)
        self.integrity_error: type[Exception] = psycopg.IntegrityError
        self._sql: dict[str, str] = {}

    def connect(self) -> Any:
        try:
            conn = self._psycopg.connect(self.url, autocommit=True, row_factory=_row_factory)
        except self._psycopg.OperationalError as exc:
            raise StoreUnavailableError(
                f"cannot connect to the PostgreSQL store {self.where}: "
                f"{str(exc).strip().splitlines()[0]}") from exc
        return conn

    def failure(self, exc: Exception) -> StoreError | None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, self._psycopg.errors.ReadOnlySqlTransaction):
            # A hot standby, or a database or role set to read-only transactions.
            return StoreUnavailableError(f"the PostgreSQL store {self.where} is read-only: "
                                         f"{first}")
        if not isinstance(exc, self._psycopg.OperationalError):
            return None
        return StoreUnavailableError(f"the PostgreSQL store {self.where} cannot be used: "
                                     f"{first}")

    def sql(self, statement: str) -> str:
        converted = self._sql.get(statement)
        if converted is None:
            converted = _PLACEHOLDER.sub("%s", statement.replace("%", "%%"))
            self._sql[statement] = converted
        return converted

    def begin(self, conn: Any) -> None:
        conn.execute("BEGIN")

    def schema_version(self, conn: Any) -> int:
        conn.execute("CREATE TABLE IF NOT EXISTS facetrail_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM facetrail_schema").fetchone()
        return int(row[0] or 0)

    def set_schema_version(self, conn: Any, version: int) -> None:
        conn.execute("DELETE FROM facetrail_schema")
        conn.execute("INSERT INTO facetrail_schema (version) VALUES (%s)", (version,))

    def migration(self, version: int) -> list[str]:
        return [resources.files("facetrail.store").joinpath(MIGRATIONS[version]).read_text()]

    def lock_audit(self, conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_AUDIT_LOCK,))

    def lock_migrations(self, conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))

    def lock_rates(self, conn: Any, key: str) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_RATE_LOCK, key))

    @contextmanager
    def migrating(self, conn: Any) -> Iterator[None]:
        """Nothing to relax: PostgreSQL changes constraints in place."""
        yield


    def scrub(self, conn: Any) -> list[str]:
        """The planner's statistics of the embedding columns are dropped, and never gathered
        again: ANALYZE keeps sampled values of a column (its histogram bounds) in
        ``pg_statistic``, copies of embeddings. VACUUM FULL writes the tables that hold
        biometric data anew, and ``pg_statistic`` too (plain VACUUM leaves dead rows' bytes
        in free space); VACUUM cleans the others. Then the WAL is switched and a checkpoint
        taken, after which the segments that logged the erased rows are no longer needed:
        with ``wal_recycle = off`` they are removed, otherwise renamed and overwritten as the
        log moves on. Rewriting ``pg_statistic`` needs the database's owner or a superuser;
        switching and checkpointing a superuser or ``pg_checkpoint``: when refused, the report
        says so."""
        done: list[str] = []
        psycopg = self._psycopg
        for statement, says, allowed in SCRUB_STEPS:
            try:
                if allowed and not conn.execute(allowed).fetchone()[0]:
                    done.append(f"not done: {says} (needs the database's owner or a superuser)")
                    continue
                conn.execute(statement)
                done.append(says)
            except psycopg.Error as exc:
                first = str(exc).strip().splitlines()[0]
                done.append(f"not done: {says} ({first})")
        return done


_OWNER = ("SELECT r.rolsuper OR d.datdba = r.oid FROM pg_roles r, pg_database d"
          " WHERE r.rolname = current_user AND d.datname = current_database()")
_NO_STATISTICS = ("ALTER COLUMN embedding SET STATISTICS 0,"
                  " ALTER COLUMN embedding TYPE BYTEA")  # a column's new type drops its stats
SCRUB_STEPS = (
    (f"ALTER TABLE faces {_NO_STATISTICS}", "statistics of the faces' embeddings dropped", ""),
    (f"ALTER TABLE optout_templates {_NO_STATISTICS}",
     "statistics of the opt-out templates dropped", ""),
    ("VACUUM (FULL) faces, optout_templates",
     "faces and opt-out templates rewritten (VACUUM FULL)", ""),
    ("VACUUM (FULL) pg_statistic", "planner statistics rewritten (VACUUM FULL)", _OWNER),
    ("VACUUM images, appearances, searches, search_candidates, erased_faces",
     "other tables vacuumed", ""),
    ("SELECT pg_switch_wal()", "write-ahead log switched to a new segment", ""),
    ("CHECKPOINT", "checkpoint taken; older log segments released", ""),
)
"""(statement, what it did, a query saying whether this role may run it, or '')."""


class PostgresStore(SQLStore):
    def __init__(self, url: str) -> None:
        super().__init__(PostgresDialect(url))


def redact(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
