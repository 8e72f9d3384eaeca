"""The store protocol. SQLite implements it today; PostgreSQL can implement it unchanged.

The pipeline talks only to this interface, never to SQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from facetrail.audit import AuditEvent, ChainedEvent
from facetrail.faces.base import ModelInfo
from facetrail.records import Appearance, ImageAnalysis, ImageInfo, Provenance


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    uri: str
    lawful_basis: str
    purpose: str
    retention_days: int | None


@dataclass(frozen=True)
class SourceRow(SourceSpec):
    id: int
    created_at: str
    created_by: str


@dataclass(frozen=True)
class ErrorRow:
    source: str
    location: str
    code: str
    reason: str
    run_id: int | None
    at: str


@dataclass(frozen=True)
class FaceRow:
    face_id: int
    box: tuple[int, int, int, int]
    det_score: float
    quality: float
    image: ImageInfo
    appearances: tuple[Appearance, ...]


@dataclass(frozen=True)
class RunCounts:
    items: int = 0
    images_new: int = 0
    duplicates: int = 0
    skipped: int = 0
    faces: int = 0
    errors: int = 0


AuditRow = ChainedEvent


@dataclass(frozen=True)
class AuditQuery:
    """Filters on the audit log; times are ISO 8601 UTC strings compared as text."""

    actor: str | None = None
    case_ref: str | None = None
    action: str | None = None
    since: str | None = None
    until: str | None = None
    after_id: int = 0
    limit: int | None = None


@dataclass(frozen=True)
class UserRow:
    id: int
    name: str
    role: str
    created_at: str
    created_by: str
    active_tokens: int = 0


@dataclass(frozen=True)
class Credential:
    """Who a token or session belongs to."""

    user: UserRow
    token_id: int
    csrf: str | None = None
    """The session's CSRF token; None for a bearer token."""


class Store(Protocol):
    # sources
    def add_source(self, spec: SourceSpec, actor: str) -> SourceRow: ...
    def get_source(self, name: str) -> SourceRow: ...
    def list_sources(self) -> list[SourceRow]: ...

    # models
    def model_id(self, model: ModelInfo) -> int: ...

    # ingest
    def start_run(self, source_id: int, paths: Sequence[str], actor: str) -> int: ...
    def finish_run(self, run_id: int, status: str, counts: RunCounts) -> None: ...
    def seen(self, source_id: int, location: str, fingerprint: str) -> bool: ...
    def has_image(self, sha256: str, model_id: int) -> bool: ...
    def add_image(
        self,
        analysis: ImageAnalysis,
        size: int,
        model_id: int,
        detector: str,
        source_id: int,
        run_id: int,
        found_at: Sequence[tuple[Provenance, str | None]],
    ) -> None: ...
    def add_appearances(
        self,
        sha256: str,
        model_id: int,
        source_id: int,
        run_id: int,
        found_at: Sequence[tuple[Provenance, str | None]],
    ) -> int: ...
    def record_error(
        self, source_id: int, run_id: int, location: str, code: str, reason: str
    ) -> None: ...
    def errors(self, source: str | None = None) -> list[ErrorRow]: ...
    def clear_archive_errors(self, source_id: int, under: str) -> None: ...

    # faces, for the index and for search
    def face_count(self, model_id: int) -> tuple[int, int]: ...
    def iter_embeddings(
        self, model_id: int, after_id: int = 0, batch: int = 65536
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...
    def faces(self, face_ids: Sequence[int]) -> dict[int, FaceRow]: ...

    # users, tokens and sessions (only hashes of tokens and session ids are kept)
    def add_user(self, name: str, role: str, actor: str) -> UserRow: ...
    def get_user(self, name: str) -> UserRow: ...
    def list_users(self) -> list[UserRow]: ...
    def add_token(self, user_id: int, token_hash: str) -> int: ...
    def revoke_tokens(self, user_id: int) -> int: ...
    def credential(self, token_hash: str) -> Credential | None: ...
    def add_session(self, id_hash: str, token_id: int, csrf: str, expires_at: str) -> None: ...
    def session(self, id_hash: str, now: str) -> Credential | None: ...
    def end_session(self, id_hash: str) -> None: ...

    # audit and reporting
    def append_audit(self, event: AuditEvent) -> int: ...
    def audit_rows(self, query: AuditQuery | None = None) -> list[AuditRow]: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
