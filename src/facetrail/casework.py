"""Searches kept as records for later review: probes, searches by case, two-person review.

The engine owns this module (``Facetrail.keep_probe``, ``search_probes``, ``review`` and their
readers); the CLI and the web call those. The search itself is the pipeline's
(``Facetrail.search``); this module keeps the probe bytes under ``<home>/probes/`` so
reviewers can see the probe face, keeps each search's result, and records reviewers'
decisions. A reviewer never reviews a search they made themselves: the same actor name (an
account's, or the local operator's) cannot search and review one search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from facetrail import serialize
from facetrail.accounts import Actor
from facetrail.audit import AuditEvent, utc_now
from facetrail.errors import (
    InputError,
    NoFaceError,
    NotFoundError,
    OwnSearchReviewError,
    PolicyError,
)
from facetrail.faces.cache import write_atomically
from facetrail.imaging import sha256_hex
from facetrail.records import ProbeFace, SearchResult
from facetrail.store import ProbeRow, ReviewRow, SearchRow

if TYPE_CHECKING:
    from facetrail.engine import Facetrail

DECISIONS = ("confirm", "reject")
CASE_LIMIT = 100_000
"""The most searches a case report holds."""


@dataclass(frozen=True)
class KeptSearch:
    """A search just made: its record, and the full typed result."""

    record: SearchRow
    result: SearchResult


@dataclass(frozen=True)
class SearchRecord:
    """A kept search with its result and every review of its candidates, oldest first."""

    search: SearchRow
    reviews: tuple[ReviewRow, ...]


class Casework:
    def __init__(self, engine: Facetrail) -> None:
        self.engine = engine
        self.store = engine.store
        self.probe_dir = engine.home / "probes"

    # -- probes -----------------------------------------------------------------------------
    def add_probe(self, data: bytes, actor: Actor) -> ProbeRow:
        """Decode the probe and find its faces (largest first); keep its bytes by sha256.
        Audited with its hash and face count (never its pixels)."""
        sha = sha256_hex(data)
        analysis = self.engine.analyzer(data, sha, embed=())  # its faces, not their vectors
        path = self._probe_path(sha)
        if not path.exists():  # the same probe may be uploaded by two requests at once
            write_atomically(path, lambda tmp: tmp.write_bytes(data))
        self.store.add_probe(
            ProbeRow(
                sha256=sha, bytes=len(data), width=analysis.width, height=analysis.height,
                format=analysis.format,
                faces=tuple(ProbeFace(f.box, f.det_score, f.quality) for f in analysis.faces),
                created_at=utc_now(), created_by=actor.name,
            )
        )
        self.store.add_probe_org(sha, actor.org_id)
        self.store.append_audit(AuditEvent(
            actor=actor.name, action="probe.add", org=actor.org,
            details={"sha256": sha, "faces": len(analysis.faces), "bytes": len(data)},
        ))
        return self.store.get_probe(sha)

    def probe(self, sha256: str, actor: Actor) -> ProbeRow:
        """A probe ``actor``'s organisation uploaded."""
        row = self.store.get_probe(sha256)
        self.engine.visibility.check_probe(sha256, actor.org_id)
        return row

    def probe_bytes(self, sha256: str, actor: Actor) -> bytes:
        """The bytes of a stored probe, checked against their hash."""
        self.probe(sha256, actor)
        try:
            data = self._probe_path(sha256).read_bytes()
        except OSError as exc:
            raise NotFoundError(f"the bytes of probe {sha256} are gone") from exc
        if sha256_hex(data) != sha256:
            raise NotFoundError(f"the bytes of probe {sha256} no longer match their hash")
        return data

    def _probe_path(self, sha256: str) -> Path:
        return self.probe_dir / sha256[:2] / sha256

    # -- searches ---------------------------------------------------------------------------
    def search(
        self,
        probes: Sequence[str | bytes],
        actor: Actor,
        *,
        case_ref: str,
        purpose: str,
        face: int | None = None,
        all_faces: bool = False,
        photo_faces: Sequence[int] = (),
        top: int | None = None,
        threshold: float | None = None,
        min_quality: float | None = None,
        fusion: str | None = None,
        history: bool = False,
    ) -> KeptSearch:
        """Search stored probes (sha256) or new ones (bytes, kept first); the search is
        audited and kept as a record. Several probes are photos of one person."""
        if not case_ref.strip():
            raise PolicyError("a search needs a case reference (--case)")
        if not purpose.strip():
            raise PolicyError("a search needs a purpose (--purpose)")
        if not probes:
            raise InputError("a search needs a probe")
        shas = [p if isinstance(p, str) else self.add_probe(p, actor).sha256 for p in probes]
        first = self.probe(shas[0], actor)
        if len(shas) == 1 and not all_faces:
            if not first.faces:
                raise NoFaceError(
                    "no face was found in the probe image; try a clearer or larger photo"
                )
            if not 0 <= (face or 0) < len(first.faces):
                raise InputError(
                    f"face {face} does not exist: the probe has {len(first.faces)} face(s), "
                    f"numbered 0 (largest) to {len(first.faces) - 1}"
                )
        result = self.engine.search(
            self.probe_bytes(shas[0], actor),
            more_probes=[self.probe_bytes(s, actor) for s in shas[1:]],
            case_ref=case_ref, purpose=purpose, top=top, threshold=threshold,
            min_quality=min_quality, face=face, all_faces=all_faces, photo_faces=photo_faces,
            fusion=fusion, actor=actor, history=history,
        )
        # A face found for several probe faces (all faces searched) is one candidate to
        # review, under its best score.
        best: dict[int, tuple[int, int, float]] = {}
        for c in result.candidates:
            if c.face_id not in best or c.score > best[c.face_id][2]:
                best[c.face_id] = (c.rank, c.face_id, c.score)
        search_id = self.store.add_search(
            actor.user_id, actor.name, case_ref.strip(), purpose.strip(), shas[0],
            result.probe.searched_faces[0], result.audit_id, serialize.search_result(result),
            list(best.values()), org_id=actor.org_id,
        )
        return KeptSearch(self.store.get_search(search_id), result)

    def searches(
        self, actor: Actor, case_ref: str | None = None, by: str | None = None,
        limit: int = 200,
    ) -> list[SearchRow]:
        return self.store.list_searches(case_ref=case_ref, actor=by, limit=limit,
                                        org_id=actor.org_id)

    def review_queue(self, actor: Actor, limit: int = 200) -> list[SearchRow]:
        return self.store.list_searches(pending_for=actor.name, limit=limit,
                                        org_id=actor.org_id)

    def search_row(self, search_id: int, actor: Actor) -> SearchRow:
        """A search made for ``actor``'s organisation (another's does not exist for it)."""
        row = self.store.get_search(search_id)
        if row.org_id != actor.org_id:
            raise NotFoundError(f"no search {search_id}")
        return row

    def record(self, search_id: int, actor: Actor) -> SearchRecord:
        return SearchRecord(self.search_row(search_id, actor),
                            tuple(self.store.reviews([search_id])))

    def case(self, case_ref: str, actor: Actor) -> list[SearchRecord]:
        searches = list(reversed(self.store.list_searches(
            case_ref=case_ref, limit=CASE_LIMIT, org_id=actor.org_id)))
        reviews = self.store.reviews([s.id for s in searches]) if searches else []
        return [SearchRecord(s, tuple(r for r in reviews if r.search_id == s.id))
                for s in searches]

    # -- reviews ----------------------------------------------------------------------------
    def to_review(self, search_id: int, actor: Actor) -> SearchRecord:
        """A search ``actor`` may review: refused if it is their own."""
        record = self.record(search_id, actor)
        self._not_own(record.search, actor)
        return record

    def review(
        self, search_id: int, face_id: int, decision: str, note: str, actor: Actor
    ) -> ReviewRow:
        """Confirm or reject one candidate of someone else's search, with a note."""
        search = self.search_row(search_id, actor)
        self._not_own(search, actor)
        if decision not in DECISIONS:
            raise InputError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
        if not note.strip():
            raise PolicyError("a review needs a note saying why")
        row = self.store.add_review(search_id, face_id, actor.user_id, actor.name, decision,
                                    note.strip())
        self.store.append_audit(
            AuditEvent(
                actor=actor.name, action="review", case_ref=search.case_ref, org=actor.org,
                purpose=search.purpose,
                details={"search_id": search_id, "search_audit_id": search.audit_id,
                         "probe_sha256": search.probe_sha256, "face_id": face_id,
                         "decision": decision, "note": row.note},
            )
        )
        return row

    @staticmethod
    def _not_own(search: SearchRow, actor: Actor) -> None:
        if search.actor == actor.name or (
            actor.user_id is not None and search.user_id == actor.user_id
        ):
            raise OwnSearchReviewError(
                f"search {search.id} is your own; another reviewer must review it "
                "(two-person rule)"
            )
