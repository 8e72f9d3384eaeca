"""Store stage: the metadata store, the source of truth. One protocol, one registry.

A store is named by a URL: ``sqlite:///<path>`` (the embedded default,
``sqlite:///<home>/facetrail.db``) or ``postgresql://user@host:port/db`` (psycopg's URL forms).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from facetrail.errors import ConfigError
from facetrail.store.base import (
    AuditQuery,
    Credential,
    EraseSelector,
    ErasureRow,
    ErasureScope,
    ErrorRow,
    FaceRow,
    HeldAppearance,
    HeldImage,
    JobRow,
    OptoutRow,
    ProbeRow,
    ReviewRow,
    RunCounts,
    RunRow,
    RunScope,
    SearchRow,
    SourceRow,
    SourceSpec,
    SourceStats,
    Store,
    StoreStats,
    Tombstone,
    UserRow,
)

__all__ = [
    "STORE_SCHEMES", "AuditQuery", "Credential", "EraseSelector", "ErasureRow", "ErasureScope",
    "ErrorRow", "FaceRow", "HeldAppearance", "HeldImage", "JobRow", "OptoutRow", "ProbeRow",
    "ReviewRow", "RunCounts", "RunRow", "RunScope", "SearchRow", "SourceRow", "SourceSpec",
    "SourceStats", "Store", "StoreStats", "Tombstone", "UserRow", "default_store_url",
    "open_store", "sqlite_path",
]

STORE_SCHEMES = ("sqlite", "postgresql")


def default_store_url(home: Path) -> str:
    return f"sqlite:///{home / 'facetrail.db'}"


def sqlite_path(url: str) -> Path | None:
    """The file a ``sqlite:///PATH`` URL names; None for another store."""
    return Path(unquote(url[len("sqlite:///"):])) if url.startswith("sqlite:///") else None


def open_store(url: str) -> Store:
    """The store ``url`` names: ``sqlite:///PATH`` or ``postgresql://…``."""
    scheme = urlsplit(url).scheme
    match scheme:
        case "sqlite":
            from facetrail.store.sqlite import SQLiteStore

            path = unquote(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else ""
            if not path:
                raise ConfigError(f"a SQLite store URL is sqlite:///PATH, not {url!r}")
            return SQLiteStore(Path(path))
        case "postgresql" | "postgres":
            from facetrail.store.postgres import PostgresStore

            return PostgresStore(url)
        case _:
            raise ConfigError(
                f"unknown store URL scheme {scheme!r} in {url!r}; use sqlite:///PATH or "
                "postgresql://USER@HOST:PORT/DATABASE"
            )
