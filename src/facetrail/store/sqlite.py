"""SQLite: the embedded store. One file, WAL mode, a versioned schema (``schema_vN.sql``).

Every ingest write is one transaction per image (image + faces + appearances), so a crash or
``kill -9`` at any moment leaves either all of an image or none of it. A write transaction
takes SQLite's database-wide write lock at its start (``BEGIN IMMEDIATE``): that lock is also
what orders audit appends.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from facetrail.errors import StoreError, StoreUnavailableError
from facetrail.store.sql import SQLStore

MIGRATIONS = {v: f"schema_v{v}.sql" for v in range(1, 11)}
"""Schema version -> script that brings the previous version to it."""


class SQLiteDialect:
    name = "sqlite"
    integrity_error: type[Exception] = sqlite3.IntegrityError

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=60,
                             check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives process crashes; only an OS crash can lose the last
        # commits, never consistency.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        # Deleted content is overwritten with zeros, in its page and in freed pages: an erased
        # face leaves no bytes in the file once the write-ahead log is checkpointed (scrub).
        db.execute("PRAGMA secure_delete=ON")
        return db

    def sql(self, statement: str) -> str:
        return statement

    def failure(self, exc: Exception) -> StoreError | None:
        if not isinstance(exc, sqlite3.OperationalError) and type(exc) is not sqlite3.DatabaseError:
            return None
        text = str(exc)
        for needle, meaning in SQLITE_FAILURES:
            if needle in text:
                return StoreUnavailableError(
                    meaning.format(where=self.where, folder=self.path.parent))
        return StoreUnavailableError(f"the store {self.where} cannot be used: {text}")

    def begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def schema_version(self, conn: Any) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, conn: Any, version: int) -> None:
        broken = conn.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise StoreError(f"migrating {self.where} to schema {version} left "
                             f"{len(broken)} rows that break a foreign key; nothing changed")
        conn.execute(f"PRAGMA user_version={int(version)}")

    def migration(self, version: int) -> list[str]:
        script = resources.files("facetrail.store").joinpath(MIGRATIONS[version]).read_text()
        return _statements(script)

    def lock_audit(self, conn: Any) -> None:
        """BEGIN IMMEDIATE already holds the database's write lock."""

    def lock_migrations(self, conn: Any) -> None:
        """BEGIN IMMEDIATE already holds the database's write lock."""

    def lock_rates(self, conn: Any, key: str) -> None:
        """BEGIN IMMEDIATE already holds the database's write lock."""

    @contextmanager
    def migrating(self, conn: Any) -> Iterator[None]:
        """Foreign keys are off while tables are made again (SQLite's way of changing a
        table's constraints); what the migration leaves must still satisfy them."""
        conn.execute("PRAGMA foreign_keys=OFF")
        try:
            yield
        finally:
            conn.execute("PRAGMA foreign_keys=ON")


    def scrub(self, conn: Any) -> list[str]:
        """Copy the log's pages (deleted content zeroed, ``secure_delete``) into the file and
        truncate the log, which still holds the pages as they were before the erase. A
        reader in the middle of a transaction holds the checkpoint back: tried again."""
        for attempt in range(SCRUB_ATTEMPTS):
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return [f"{self.path.name}: deleted content zeroed (secure_delete); "
                        "write-ahead log checkpointed and truncated"]
            time.sleep(0.05 * (attempt + 1))
        return [f"{self.path.name}: deleted content zeroed (secure_delete), but the "
                "write-ahead log could not be truncated while other readers were busy; "
                "it is on the next checkpoint (run the erase again, or stop the server)"]


SCRUB_ATTEMPTS = 20
SQLITE_FAILURES = (
    ("readonly", "the store {where} is read-only: facetrail writes to it even to read (the "
     "audit log, its write-ahead log); give this user write access to it and to {folder}, "
     "or use a copy"),
    ("unable to open", "cannot open the store {where}: check that it is a file this user may "
     "read and write, in a folder it may write ({folder})"),
    ("disk is full", "the disk holding the store {where} is full: free some space and run "
     "the command again"),
    ("disk I/O error", "the store {where} could not be read or written (disk I/O error): "
     "check the disk, and that {folder} is writable"),
    ("locked", "the store {where} is locked by another process (waited 60 s): try again "
     "once it has finished"),
    ("not a database", "{where} is not a facetrail store (not a SQLite database): check "
     "--home and --store"),
)
"""SQLite's messages, and what each means for the user (``SQLiteDialect.failure``)."""


class SQLiteStore(SQLStore):
    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailableError(
                f"cannot create the folder of the store {path}: {exc.strerror or exc}") from exc
        self.path = path
        super().__init__(SQLiteDialect(path))


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
