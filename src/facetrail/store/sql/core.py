"""What every SQL store shares: connections per thread, transactions, schema migrations.

The statements of the store are written once, with ``?`` placeholders, in the SQL that SQLite
and PostgreSQL both speak; a ``Dialect`` supplies the few things that differ (connecting,
how a write transaction starts, where the schema version lives, the audit lock).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Protocol

from facetrail.errors import NotFoundError, StoreError


class IntegrityViolation(Exception):
    """A constraint refused a write (the driver's IntegrityError, whichever the driver)."""


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Dialect(Protocol):
    """What differs between the SQL engines the store runs on."""

    name: str
    where: str
    """Where the data lives, for messages (a path, or a URL without its password)."""
    integrity_error: type[Exception]

    def connect(self) -> Any:
        """A new DB-API connection in autocommit mode whose rows index by name and position."""
        ...

    def sql(self, statement: str) -> str:
        """``statement`` in the driver's placeholder style."""
        ...

    def begin(self, conn: Any) -> None:
        """Start a write transaction."""
        ...

    def schema_version(self, conn: Any) -> int: ...
    def set_schema_version(self, conn: Any, version: int) -> None: ...
    def migration(self, version: int) -> list[str]:
        """The statements that bring the schema from ``version - 1`` to ``version``."""
        ...

    def lock_audit(self, conn: Any) -> None:
        """Inside a write transaction: hold the lock that orders audit appends."""
        ...

    def lock_migrations(self, conn: Any) -> None:
        """Inside a write transaction: keep other processes from migrating at the same time."""
        ...

    def lock_rates(self, conn: Any, key: str) -> None:
        """Inside a write transaction: count and add the rate events of ``key`` one process
        at a time."""
        ...

    @contextmanager
    def migrating(self, conn: Any) -> Iterator[None]:
        """Around the migration transaction (which must check what it relaxes itself)."""
        ...

    def scrub(self, conn: Any) -> list[str]:
        """Outside a transaction: make deleted rows unrecoverable from the engine's files
        (free space in pages, the write-ahead log). Returns what was done, in words, and
        what could not be."""
        ...

    def failure(self, exc: Exception) -> StoreError | None:
        """What a driver's error says about the store's environment (it cannot be opened,
        read or written: permissions, a full disk, a lock, a lost server), in one actionable
        line; None for an error that is not about the environment."""
        ...


class Conn:
    """One DB-API connection, with the dialect's placeholders and one integrity error."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        with environment(dialect):
            self.raw = dialect.connect()
        self.in_tx = False

    def execute(self, statement: str, args: Sequence[Any] = ()) -> Cursor:
        try:
            with environment(self.dialect):
                return self.raw.execute(self.dialect.sql(statement), tuple(args))
        except self.dialect.integrity_error as exc:
            raise IntegrityViolation(str(exc)) from exc

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        try:
            with environment(self.dialect):
                self.raw.cursor().executemany(self.dialect.sql(statement),
                                              [tuple(r) for r in rows])
        except self.dialect.integrity_error as exc:
            raise IntegrityViolation(str(exc)) from exc

    def close(self) -> None:
        self.raw.close()


@contextmanager
def environment(dialect: Dialect) -> Iterator[None]:
    """Where a driver's error about the store's environment becomes ``StoreError``: around
    every connection, statement and transaction of the store."""
    try:
        yield
    except Exception as exc:
        failure = dialect.failure(exc)
        if failure is None:
            raise
        raise failure from exc


class SQLCore:
    """Connections (one per thread), transactions and migrations over a ``Dialect``."""

    SCHEMA_VERSION = 10

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._local = threading.local()
        self._conns: list[Conn] = []
        self._conns_lock = threading.Lock()
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    @property
    def where(self) -> str:
        return self.dialect.where

    @property
    def _db(self) -> Conn:
        """This thread's connection: threads never share one, so their transactions and
        reads never interleave on a connection."""
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = Conn(self.dialect)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        db = self._db
        if db.in_tx:  # nested: part of the enclosing transaction
            yield db
            return
        with environment(self.dialect):
            self.dialect.begin(db.raw)
        db.in_tx = True
        try:
            with environment(self.dialect):  # also the raw statements of migrations
                yield db
                db.raw.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself failed: never leave the connection in a transaction.
            with suppress(Exception):  # the first error is the one to report
                db.raw.execute("ROLLBACK")
            raise
        finally:
            db.in_tx = False

    def _one(self, statement: str, *args: Any) -> Any:
        row = self._db.execute(statement, args).fetchone()
        if row is None:
            raise NotFoundError(statement)
        return row

    def _insert(self, db: Conn, statement: str, args: Sequence[Any]) -> int:
        """Run an INSERT … RETURNING id and return the id."""
        return int(db.execute(statement + " RETURNING id", args).fetchone()[0])

    def _migrate(self) -> None:
        with self.dialect.migrating(self._db.raw), self._tx() as db:
            self.dialect.lock_migrations(db.raw)
            version = self.dialect.schema_version(db.raw)
            if version > self.SCHEMA_VERSION:
                raise StoreError(
                    f"{self.where} has schema version {version}, newer than this facetrail "
                    f"({self.SCHEMA_VERSION}); upgrade facetrail"
                )
            for target in range(version + 1, self.SCHEMA_VERSION + 1):
                for statement in self.dialect.migration(target):
                    db.raw.execute(statement)
                self.dialect.set_schema_version(db.raw, target)

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
