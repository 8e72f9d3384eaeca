"""The stores tests run against: SQLite files, and databases on a real PostgreSQL server.

``bash scripts/test.sh`` starts a throwaway PostgreSQL cluster and sets
``TEST_POSTGRES_URL`` to a database on it that tests may use to create others. Tests that
need PostgreSQL fail (never skip) without it.

``TEST_STORE=postgresql`` runs the CLI, API and web tests against PostgreSQL: every test then
gets a new database as its ``FACETRAIL_STORE_URL``, and data directories copied by fixtures
get a copy of their database (``CREATE DATABASE … TEMPLATE``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

BACKENDS = ("sqlite", "postgresql")


def postgres_mode() -> bool:
    mode = os.environ.get("TEST_STORE", "sqlite")
    if mode not in BACKENDS:
        raise pytest.UsageError(f"TEST_STORE={mode!r}; use one of {', '.join(BACKENDS)}")
    return mode == "postgresql"


def postgres_url() -> str:
    url = os.environ.get("TEST_POSTGRES_URL")
    if not url:
        pytest.fail(
            "TEST_POSTGRES_URL is not set: these tests need a PostgreSQL server. Run "
            "'bash scripts/test.sh', which starts one, or start one with 'bash "
            "scripts/postgres-local.sh start DIR' and export the URL it prints.",
            pytrace=False,
        )
    return url


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(postgres_url(), autocommit=True) as conn:
        conn.execute(sql)


def new_database(template: str | None = None) -> str:
    """The URL of a new, empty database (or a copy of the database ``template`` names)."""
    name = f"t_{uuid.uuid4().hex[:20]}"
    sql = f'CREATE DATABASE "{name}"'
    if template is not None:
        sql += f' TEMPLATE "{urlsplit(template).path.lstrip("/")}"'
    _admin(sql)
    return _with_database(postgres_url(), name)


def new_store_url(backend: str, where: Path) -> str:
    """A URL for a new store of ``backend``; a SQLite store lies under ``where``."""
    if backend == "sqlite":
        return f"sqlite:///{where / f'store-{uuid.uuid4().hex[:8]}.db'}"
    return new_database()


def copy_store(url: str, home: Path) -> str:
    """A copy of the store ``url`` for a copied data directory ``home`` (a SQLite store in a
    data directory was copied with it)."""
    if url.startswith("sqlite:"):
        return f"sqlite:///{home / 'facetrail.db'}"
    return new_database(template=url)


def _note(home: Path) -> Path:
    return home.parent / f"{home.name}.store-url"


def store_url_of(home: Path) -> str:
    """The store of the data directory ``home`` in this test run: its own PostgreSQL database
    when one was made for it, else the test's, else its SQLite file."""
    if postgres_mode():
        note = _note(home)
        return note.read_text() if note.exists() else os.environ["FACETRAIL_STORE_URL"]
    return f"sqlite:///{home / 'facetrail.db'}"


def store_env(home: Path) -> dict[str, str]:
    """The environment that points facetrail at the store of ``home``."""
    return {"FACETRAIL_STORE_URL": store_url_of(home)} if postgres_mode() else {}


def own_store(home: Path) -> dict[str, str]:
    """Give ``home`` a store of its own (a new database, in PostgreSQL runs)."""
    if postgres_mode():
        _note(home).write_text(new_database())
    return store_env(home)


def copy_home(source: Path, target: Path) -> None:
    """Copy the data directory ``source`` to ``target``, with its store; in PostgreSQL runs the
    copy's database also becomes the test's ``FACETRAIL_STORE_URL``."""
    shutil.copytree(source, target)
    if postgres_mode():
        url = new_database(template=store_url_of(source))
        _note(target).write_text(url)
        os.environ["FACETRAIL_STORE_URL"] = url


def raw_sql(url: str, *statements: str) -> list[tuple[object, ...]]:
    """Run ``statements`` on the store's database behind facetrail's back, as someone with
    access to the database could; returns the last statement's rows."""
    rows: list[tuple[object, ...]] = []
    if url.startswith("sqlite:"):
        import sqlite3

        db = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        try:
            for statement in statements:
                cur = db.execute(statement)
                rows = [tuple(r) for r in cur.fetchall()]
        finally:
            db.close()
        return rows
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            cur = conn.execute(statement)
            rows = [tuple(r) for r in cur.fetchall()] if cur.description else []
    return rows


def drop_audit_guards(url: str) -> tuple[str, ...]:
    """Statements removing the append-only triggers of the audit table."""
    if url.startswith("sqlite:"):
        return ("DROP TRIGGER audit_no_update", "DROP TRIGGER audit_no_delete")
    return ("DROP TRIGGER audit_no_update ON audit", "DROP TRIGGER audit_no_truncate ON audit")


def _connect(url: str) -> tuple[object, str]:
    """A DB-API connection to the store ``url`` and its placeholder."""
    if url.startswith("sqlite:"):
        import sqlite3

        return sqlite3.connect(url[len("sqlite:///"):], isolation_level=None), "?"
    import psycopg

    return psycopg.connect(url, autocommit=True), "%s"


def build_schema(url: str, version: int) -> None:
    """Make the store ``url`` (an empty database) at schema ``version``, from the scripts this
    facetrail ships: a store as an older facetrail made it."""
    from importlib import resources

    scripts = resources.files("facetrail.store")
    if url.startswith("sqlite:"):
        import sqlite3

        db = sqlite3.connect(url[len("sqlite:///"):])
        try:
            for v in range(1, version + 1):
                db.executescript(scripts.joinpath(f"schema_v{v}.sql").read_text())
            db.execute(f"PRAGMA user_version={version}")
            db.commit()
        finally:
            db.close()
        return
    raw_sql(url, *(scripts.joinpath(f"pg_schema_v{v}.sql").read_text()
                   for v in range(1, version + 1)),
            "CREATE TABLE facetrail_schema (version INTEGER NOT NULL)",
            f"INSERT INTO facetrail_schema (version) VALUES ({version})")


def copy_rows(source: str, target: str, table: str, columns: str,
              change: Callable[[tuple[Any, ...]], tuple[Any, ...]] = lambda r: r) -> int:
    """Copy ``columns`` of every row of ``table`` from the store ``source`` to ``target``."""
    src, _ = _connect(source)
    dst, mark = _connect(target)
    try:
        rows = [change(tuple(r)) for r in src.execute(  # type: ignore[attr-defined]
            f"SELECT {columns} FROM {table} ORDER BY 1").fetchall()]
        if rows:
            marks = ",".join([mark] * len(rows[0]))
            dst.cursor().executemany(  # type: ignore[attr-defined]
                f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
            if mark == "%s" and columns.startswith("id,"):  # rows given ids: move the sequence
                dst.execute(  # type: ignore[attr-defined]
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT max(id) FROM {table}))")
        return len(rows)
    finally:
        src.close()  # type: ignore[attr-defined]
        dst.close()  # type: ignore[attr-defined]
