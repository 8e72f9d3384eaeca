"""The store protocol, in sections, and the typed records it reads and writes.

SQLite and PostgreSQL implement it (``store/sql/``); the pipeline, the engine and the web talk
only to this interface, never to SQL. A store stores and reads: what is allowed is decided
above it, by the engine, which also writes the audit events.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from facetrail.audit import AuditEvent, ChainedEvent
from facetrail.faces.base import ModelInfo
from facetrail.records import Appearance, ImageAnalysis, ImageInfo, ProbeFace, Provenance


@dataclass(frozen=True)
class OrgRow:
    """An organisation: an agency of the deployment, owning sources and users."""

    id: int
    name: str
    created_at: str
    created_by: str


@dataclass(frozen=True)
class ShareRow:
    """A source shared with an organisation other than its owner, under the sharing's own
    lawful basis and purpose."""

    source: str
    org: str
    source_id: int
    org_id: int
    lawful_basis: str
    purpose: str
    created_at: str
    created_by: str


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    uri: str
    lawful_basis: str
    purpose: str
    retention_days: int | None
    org_id: int = 1
    """The organisation that owns the source (1: 'default')."""


@dataclass(frozen=True, kw_only=True)
class SourceRow(SourceSpec):
    id: int
    created_at: str
    created_by: str
    org: str = "default"


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
class LocatedFace:
    """A stored face with the location it was seen at (for evaluation and calibration)."""

    location: str
    face_id: int
    ordinal: int
    """0 is the largest face of its image."""
    quality: float
    embedding: np.ndarray


@dataclass(frozen=True)
class RunCounts:
    items: int = 0
    images_new: int = 0
    duplicates: int = 0
    skipped: int = 0
    faces: int = 0
    errors: int = 0
    suppressed: int = 0
    """Faces not stored: they match an opt-out, or were erased from their image; and images
    not ingested because they were erased by name."""
    gone: int = 0


@dataclass(frozen=True)
class RunScope:
    """What one target of an ingest run covers, for finding what the run no longer found.

    ``listed`` False: the files found by walking the folder (or the one file) at ``path``;
    True: what the manifests and web archives at or under ``path`` list. ``path`` is resolved,
    as the sources resolve the locations they give."""

    path: str
    listed: bool


@dataclass(frozen=True)
class RunRow:
    """An ingest run: what it was given, how it ended, what it counted."""

    id: int
    source: str
    paths: tuple[str, ...]
    status: str
    """running, completed, failed or interrupted (a run found 'running' whose process is gone,
    once another run starts)."""
    started_at: str
    finished_at: str | None
    counts: RunCounts


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
    org: str | None = None
    """Only the events of this organisation."""
    with_deployment: bool = False
    """With ``org``: also the deployment's own events (those of no organisation)."""


@dataclass(frozen=True)
class UserRow:
    id: int
    name: str
    role: str
    created_at: str
    created_by: str
    active_tokens: int = 0
    org_id: int = 1
    org: str = "default"


@dataclass(frozen=True)
class Credential:
    """Who a token or session belongs to."""

    user: UserRow
    token_id: int
    csrf: str | None = None
    """The session's CSRF token; None for a bearer token."""


@dataclass(frozen=True)
class ProbeRow:
    """An uploaded probe image and the faces found in it (largest first)."""

    sha256: str
    bytes: int
    width: int
    height: int
    format: str
    faces: tuple[ProbeFace, ...]
    created_at: str
    created_by: str


@dataclass(frozen=True)
class SearchRow:
    """A search kept as a record, with its result in the stable JSON form (docs/json.md)."""

    id: int
    user_id: int | None
    """The searcher's account; None for the local operator (the OS user of the CLI)."""
    actor: str
    """The searcher's name, as in the audit log: a user name, or the local operator's."""
    case_ref: str
    purpose: str
    probe_sha256: str
    probe_face: int
    audit_id: int
    result: dict[str, Any]
    created_at: str
    candidates: int = 0
    pending: int = 0
    org_id: int = 1
    """The organisation the search was made for."""
    """Candidates no one has reviewed yet."""


@dataclass(frozen=True)
class ReviewRow:
    id: int
    search_id: int
    face_id: int
    user_id: int | None
    """The reviewer's account; None for the local operator."""
    reviewer: str
    decision: str
    note: str
    at: str


@dataclass(frozen=True)
class JobRow:
    """An ingest job started over HTTP; it runs in the background and resumes after restarts."""

    id: int
    source: str
    paths: tuple[str, ...]
    status: str
    """queued, running, completed, failed or cancelled."""
    created_by: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    run_ids: tuple[int, ...]
    progress: dict[str, Any]
    error: str | None
    holder: str | None = None
    """The runner that holds (or last held) the job's lease, e.g. 'host:pid:token'."""
    heartbeat_at: str | None = None
    """When that runner last said it was alive (UTC); None: nobody holds the lease."""


@dataclass(frozen=True)
class EraseSelector:
    """What an erasure starts from: faces by id, images by sha256 (every model's analysis of
    them), and a source's appearances (those first ingested before ``created_before`` only,
    when it is given: retention). Images left with no appearance go with their faces."""

    face_ids: tuple[int, ...] = ()
    sha256s: tuple[str, ...] = ()
    source_id: int | None = None
    created_before: str | None = None


@dataclass(frozen=True)
class ErasureScope:
    """Everything an erasure removes, found before anything is removed (``--dry-run``)."""

    faces: tuple[int, ...]
    images: tuple[int, ...]
    """Image rows (one per face model an image was analysed with)."""
    sha256s: tuple[str, ...]
    """The sha256 of those images, for their cached thumbnails and the audit event."""
    appearances: tuple[int, ...]
    searches: tuple[int, ...]
    """Kept searches that returned one of the faces: their candidates become tombstones."""

    @property
    def empty(self) -> bool:
        return not (self.faces or self.images or self.appearances)

    def counts(self) -> dict[str, int]:
        return {"faces": len(self.faces), "images": len(set(self.sha256s)),
                "appearances": len(self.appearances), "searches": len(self.searches)}


@dataclass(frozen=True)
class ErasureRow:
    id: int
    at: str
    actor: str
    kind: str
    target: str
    reason: str
    counts: dict[str, Any]


@dataclass(frozen=True)
class Tombstone:
    """What is left of an erased face: when and why it was erased, nothing of the face."""

    face_id: int
    erasure_id: int
    at: str
    kind: str
    reason: str


@dataclass(frozen=True)
class OptoutRow:
    reference: str
    note: str
    photos: int
    templates: int
    created_at: str
    created_by: str
    org: str


@dataclass(frozen=True)
class HeldAppearance:
    """An appearance with when facetrail first recorded it, and when a re-ingest found it gone
    (None: still where it was seen)."""

    appearance: Appearance
    created_at: str
    gone_at: str | None = None


@dataclass(frozen=True)
class HeldImage:
    """What the store holds of an image, for one face model: its size, when it was first
    ingested, and every appearance."""

    sha256: str
    bytes: int
    format: str
    width: int
    height: int
    created_at: str
    appearances: tuple[HeldAppearance, ...]


@dataclass(frozen=True)
class SourceStats:
    source: str
    kind: str
    retention_days: int | None
    appearances: int
    images: int
    errors: int


@dataclass(frozen=True)
class StoreStats:
    """Counts; images, appearances and faces are those of one face model."""

    sources: int
    images: int
    appearances: int
    faces: int
    images_without_faces: int
    errors: int
    searches: int
    ingest_runs: int
    per_source: tuple[SourceStats, ...]
    faces_by_runtime: dict[str, int]

    def source(self, name: str) -> SourceStats | None:
        return next((s for s in self.per_source if s.source == name), None)


class SourceStore(Protocol):
    """Sources of images and their lawful basis, purpose and retention."""

    def add_source(self, spec: SourceSpec, actor: str) -> SourceRow: ...
    def get_source(self, name: str) -> SourceRow: ...
    def list_sources(self) -> list[SourceRow]: ...
    def set_retention(self, name: str, retention_days: int | None) -> SourceRow: ...
    def source_roots(self, name: str) -> list[str]:
        """Where a source's items may lie: its uri and every path an ingest of it was given."""
        ...


class ModelStore(Protocol):
    """Embedding spaces, declared models, calibrations and store-wide settings."""

    def model_id(self, model: ModelInfo) -> int: ...
    def models(self) -> list[tuple[int, str, str]]:
        """(id, key, info JSON) of every embedding space the store holds, oldest first."""
        ...
    def setting(self, key: str) -> str | None: ...
    def set_setting(self, key: str, value: str) -> None: ...
    def add_user_model(self, name: str, spec: str, actor: str) -> None: ...
    def user_models(self) -> dict[str, str]: ...
    def image_count(self, model_id: int) -> int: ...
    def count_to_move(self, from_model: int, to_model: int) -> int: ...
    def images_to_move(
        self, from_model: int, to_model: int, after: int = 0, limit: int = 256
    ) -> list[tuple[int, str, list[Appearance]]]: ...
    def add_moved_image(
        self, analysis: ImageAnalysis, size: int, model_id: int, detector: str, from_model: int
    ) -> None: ...
    def save_calibration(self, model_id: int, source: str, data: str, actor: str) -> int: ...
    def calibration(self, model_id: int) -> str | None:
        """The JSON of the model's latest calibration, or None."""
        ...


class IngestStore(Protocol):
    """Ingest runs, images with their faces and appearances, ingest errors."""

    def start_run(self, source_id: int, paths: Sequence[str], actor: str, holder: str,
                  stale_before: str) -> int:
        """A new run of a source, held by ``holder`` (a process anywhere) under a lease it
        renews. Runs whose lease was last renewed before ``stale_before`` are recorded as
        interrupted first; a live run of the same source raises ConflictError."""
        ...
    def renew_run(self, run_id: int, holder: str) -> bool:
        """Renew the lease; False if ``holder`` no longer holds the run."""
        ...
    def running_holders(self) -> list[str]:
        """The holders of the runs recorded as running."""
        ...
    def interrupt_runs(self, holders: Sequence[str]) -> int:
        """Record the running runs of ``holders`` (known to be gone) as interrupted."""
        ...
    def finish_run(self, run_id: int, status: str, counts: RunCounts) -> None: ...
    def runs(self) -> list[RunRow]:
        """Every ingest run, oldest first."""
        ...
    def seen(self, source_id: int, location: str, fingerprint: str) -> bool: ...
    def touch(
        self, source_id: int, run_id: int, seen: Sequence[tuple[str, str, str | None]]
    ) -> None:
        """Record that run ``run_id`` found these (location, fingerprint, listing) unchanged:
        their appearances are current (again), and the only current ones at their location."""
        ...
    def mark_gone(self, source_id: int, run_id: int, scopes: Sequence[RunScope]) -> int:
        """Mark gone, now, the current appearances of the source under ``scopes`` that run
        ``run_id`` did not find, leaving those where it met an error; return how many
        appearances the run found gone (these, and those replaced at their location)."""
        ...
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
    ) -> bool:
        """Store an image, its faces and where it was found, in one transaction; whether the
        image was new (False: another run stored it first, and only ``found_at`` was
        recorded)."""
        ...
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
    def clear_error(self, source_id: int, location: str) -> None:
        """Forget the error recorded at ``location`` (a target found empty before)."""
        ...
    def clear_archive_errors(self, source_id: int, under: str) -> None: ...
    def image_appearances(self, sha256: str) -> list[Appearance]: ...


class FaceStore(Protocol):
    """Faces, for the index and for search."""

    def face_count(self, model_id: int) -> tuple[int, int]: ...
    def searchable_faces(self, model_id: int, min_quality: float) -> int:
        """Faces of ``model_id`` whose quality is at least ``min_quality``."""
        ...
    def iter_embeddings(
        self, model_id: int, after_id: int = 0, batch: int = 65536
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...
    def faces(self, face_ids: Sequence[int]) -> dict[int, FaceRow]: ...
    def source_faces(self, source: str, model_id: int) -> list[LocatedFace]: ...


class AccountStore(Protocol):
    """Users, tokens and sessions (only hashes of tokens and session ids are kept)."""

    def add_user(self, name: str, role: str, actor: str, org_id: int = 1) -> UserRow: ...
    def get_user(self, name: str) -> UserRow: ...
    def list_users(self) -> list[UserRow]: ...
    def add_token(self, user_id: int, token_hash: str) -> int: ...
    def revoke_tokens(self, user_id: int) -> int: ...
    def credential(self, token_hash: str) -> Credential | None: ...
    def add_session(self, id_hash: str, token_id: int, csrf: str, expires_at: str) -> None: ...
    def session(self, id_hash: str, now: str) -> Credential | None: ...
    def end_session(self, id_hash: str) -> None: ...


class CaseStore(Protocol):
    """Probes, searches kept as records, reviews."""

    def add_probe(self, probe: ProbeRow) -> None: ...
    def get_probe(self, sha256: str) -> ProbeRow: ...
    def add_search(
        self, user_id: int | None, actor: str, case_ref: str, purpose: str, probe_sha256: str,
        probe_face: int, audit_id: int, result: dict[str, Any],
        candidates: Sequence[tuple[int, int, float]], org_id: int = 1,
    ) -> int:
        """``candidates``: (rank, face_id, score), one per face_id; ``org_id``: the
        organisation the search was made for."""
        ...
    def get_search(self, search_id: int) -> SearchRow: ...
    def list_searches(
        self, case_ref: str | None = None, actor: str | None = None,
        pending_for: str | None = None, limit: int = 200, org_id: int | None = None,
    ) -> list[SearchRow]:
        """Newest first (results only with ``case_ref``). ``actor``: by that actor only;
        ``pending_for``: by other actors, with candidates no one has reviewed; ``org_id``:
        made for that organisation only."""
        ...
    def add_review(
        self, search_id: int, face_id: int, user_id: int | None, actor: str, decision: str,
        note: str,
    ) -> ReviewRow:
        """Raises ConflictError if ``actor`` reviewed that candidate already."""
        ...
    def reviews(self, search_ids: Sequence[int]) -> list[ReviewRow]: ...


class JobStore(Protocol):
    """Ingest jobs started over HTTP, and the leases that let one runner among many run each.

    A runner (a server process) *claims* a job, which makes it the job's holder, and renews
    the lease with a heartbeat while it runs it. A running job whose heartbeat is old lost its
    runner (a killed process, a lost host) and can be claimed again. Times are UTC strings as
    ``audit.utc_now`` writes them, which sort as they compare."""

    def add_job(self, source_id: int, paths: Sequence[str], actor: str) -> JobRow: ...
    def get_job(self, job_id: int) -> JobRow: ...
    def list_jobs(self, unfinished: bool = False, limit: int = 200) -> list[JobRow]: ...
    def update_job(
        self, job_id: int, *, status: str | None = None, progress: dict[str, Any] | None = None,
        run_id: int | None = None, error: str | None = None, started: bool = False,
    ) -> JobRow: ...
    def claim_job(
        self, job_id: int, holder: str, stale_before: str, gone: str | None = None
    ) -> JobRow | None:
        """Make ``holder`` the runner of a job that is queued, or running with no heartbeat,
        a heartbeat older than ``stale_before``, or the holder ``gone`` (known to be dead).
        The job becomes 'running' and the claim counts an attempt. Atomic: of runners
        claiming one job at once, one gets it. None: the job is held or finished."""
        ...
    def renew_job(self, job_id: int, holder: str) -> bool:
        """The heartbeat of a job ``holder`` runs; False if it no longer does (another runner
        took the job over, or it was cancelled or finished)."""
        ...
    def release_job(self, job_id: int, holder: str) -> None:
        """Give up the lease of a job left running (a runner stopping): any runner may claim
        it at once. Nothing happens if ``holder`` no longer holds it."""
        ...


class AuditStore(Protocol):
    """The hash-chained audit log, and counts for reporting."""

    def append_audit(self, event: AuditEvent) -> int: ...
    def audit_rows(self, query: AuditQuery | None = None) -> list[AuditRow]: ...
    def stats(self, model_id: int) -> StoreStats:
        """Counts; images, appearances and faces are those of the model ``model_id``."""
        ...


class RateStore(Protocol):
    """Events counted against rate limits, shared by every process of a deployment."""

    def take_rate(self, kind: str, key: str, limit: int, window: float, now: float
                  ) -> float | None:
        """Count one ``kind`` event for ``key`` at ``now`` (seconds since the epoch), unless
        ``limit`` of them already fall in the ``window`` seconds before: then nothing is
        counted and the seconds until one leaves the window are returned."""
        ...

    def rate_wait(self, kind: str, key: str, limit: int, window: float, now: float
                  ) -> float | None:
        """The seconds until ``key`` is under ``limit`` ``kind`` events in the window again;
        None if it is under now. Counts nothing."""
        ...


class RightsStore(Protocol):
    """Erasure with tombstones, opt-out templates, retention of probes and kept searches."""

    def erasure_scope(self, selector: EraseSelector) -> ErasureScope: ...
    def erase(self, scope: ErasureScope, *, kind: str, target: str, reason: str, actor: str,
              block_images: bool = False, remove_source: int | None = None) -> ErasureRow:
        """Remove everything ``scope`` names in one transaction, leave tombstones of its
        faces, and turn them into tombstones in kept search results. ``block_images``: the
        images are never ingested again. ``remove_source``: the source row goes too."""
        ...
    def scrub(self) -> list[str]:
        """Make deleted rows unrecoverable from the store's files (free pages, the write-ahead
        log). Returns what was done, or what could not be, in words."""
        ...
    def erasures(self, limit: int = 200) -> list[ErasureRow]: ...
    def tombstones(self, face_ids: Sequence[int]) -> dict[int, Tombstone]: ...
    def erased_boxes(self, sha256: str) -> list[tuple[int, int, int, int]]:
        """Boxes of the faces erased from an image by name, and of those ingest left out
        as opted out: never stored again there, and painted over where it is shown."""
        ...
    def erased_image(self, sha256: str) -> bool: ...
    def embeddings(self, face_ids: Sequence[int]) -> dict[int, np.ndarray]: ...
    def add_optout(self, reference: str, note: str, photos: int, actor: str, org_id: int,
                   templates: Sequence[tuple[int, str, np.ndarray]]) -> OptoutRow:
        """Templates are (model id, photo sha256, embedding)."""
        ...
    def optouts(self) -> list[OptoutRow]: ...
    def remove_optout(self, reference: str) -> OptoutRow: ...
    def optout_templates(self, model_id: int) -> tuple[list[str], np.ndarray]:
        """(reference of each row, the templates as rows of a float32 matrix)."""
        ...
    def optout_version(self, model_id: int) -> tuple[object, ...]:
        """A value that changes whenever the model's opt-out templates do (any opt-out added
        or removed), read without the templates: what a cache of them is checked against."""
        ...
    def expire_probes(self, before: str) -> list[str]:
        """Mark probes uploaded before ``before`` expired; returns their sha256."""
        ...
    def expiring_probes(self, before: str) -> list[str]: ...
    def expiring_searches(self, before: str) -> list[int]: ...
    def delete_searches(self, search_ids: Sequence[int]) -> int: ...
    def held_images(self, sha256s: Sequence[str], model_id: int) -> dict[str, HeldImage]:
        """The images of ``model_id`` with these hashes (those the store has), with their
        appearances by source and location: what subject access reports."""
        ...


class OrgStore(Protocol):
    """Organisations and the sources shared between them."""

    def add_org(self, name: str, actor: str) -> OrgRow: ...
    def get_org(self, name: str) -> OrgRow: ...
    def list_orgs(self) -> list[OrgRow]: ...
    def share_source(self, source_id: int, org_id: int, lawful_basis: str, purpose: str,
                     actor: str) -> ShareRow: ...
    def unshare_source(self, source_id: int, org_id: int) -> bool:
        """False if the source was not shared with the organisation."""
        ...
    def shares(self, source_id: int | None = None, org_id: int | None = None
               ) -> list[ShareRow]: ...
    def visible_source_ids(self, org_id: int) -> list[int]:
        """The sources an organisation owns or has been shared, by id."""
        ...
    def source_face_ids(self, source_ids: Sequence[int], model_id: int) -> np.ndarray:
        """Sorted int64 ids of the faces of ``model_id`` in images any of ``source_ids``
        reached: what a search restricted to those sources may return."""
        ...
    def add_probe_org(self, sha256: str, org_id: int) -> None: ...
    def probe_org_ids(self, sha256: str) -> set[int]:
        """The organisations that uploaded a probe."""
        ...


class Store(RightsStore, OrgStore, SourceStore, ModelStore, IngestStore, FaceStore, AccountStore,
            CaseStore, JobStore, AuditStore, RateStore, Protocol):
    """Every section; one implementation per engine (SQLite, PostgreSQL)."""

    @property
    def where(self) -> str:
        """Where the data lives, for messages: a path, or a URL without its password."""
        ...

    def close(self) -> None: ...
