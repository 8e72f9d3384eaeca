"""The store protocol. SQLite implements it today; PostgreSQL can implement it unchanged.

The pipeline talks only to this interface, never to SQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from facetrail.audit import AuditEvent
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
    runtime: str
    """What computed the embedding: 'onnx' or 'dlib' (the same vectors; docs/runtime.md)."""
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


@dataclass(frozen=True)
class AuditRow:
    id: int
    event: AuditEvent
    prev_hash: str
    hash: str


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

    # audit and reporting
    def append_audit(self, event: AuditEvent) -> int: ...
    def audit_rows(self) -> list[AuditRow]: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
