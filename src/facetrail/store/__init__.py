"""Store stage: the metadata store, the source of truth. One protocol, one registry."""

from __future__ import annotations

from pathlib import Path

from facetrail.store.base import (
    AuditQuery,
    Credential,
    ErrorRow,
    FaceRow,
    JobRow,
    ProbeRow,
    ReviewRow,
    RunCounts,
    SearchRow,
    SourceRow,
    SourceSpec,
    Store,
    UserRow,
)

__all__ = [
    "AuditQuery", "Credential", "ErrorRow", "FaceRow", "JobRow", "ProbeRow", "ReviewRow",
    "RunCounts", "SearchRow", "SourceRow", "SourceSpec", "Store", "UserRow", "open_store",
]


def open_store(home: Path) -> Store:
    from facetrail.store.sqlite import SQLiteStore

    return SQLiteStore(home / "facetrail.db")
