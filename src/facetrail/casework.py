"""Searches kept as records for later review: probes, searches by case, two-person review.

The search itself is the pipeline's (``Facetrail.search``); this module keeps the probe bytes
under ``<home>/probes/`` so reviewers can see the probe face, keeps each search's result, and
records reviewers' decisions. A reviewer never reviews a search they made themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from facetrail import serialize
from facetrail.audit import AuditEvent, utc_now
from facetrail.engine import Facetrail
from facetrail.errors import InputError, NotFoundError, OwnSearchReviewError, PolicyError
from facetrail.imaging import sha256_hex
from facetrail.records import ProbeFace
from facetrail.store import ProbeRow, ReviewRow, SearchRow

DECISIONS = ("confirm", "reject")


@dataclass(frozen=True)
class Actor:
    """A user acting through the API: the id keys their records, the name goes in the audit."""

    user_id: int
    name: str


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
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        self.store.add_probe(
            ProbeRow(
                sha256=sha, bytes=len(data), width=analysis.width, height=analysis.height,
                format=analysis.format,
                faces=tuple(ProbeFace(f.box, f.det_score, f.quality) for f in analysis.faces),
                created_at=utc_now(), created_by=actor.name,
            )
        )
        self.store.append_audit(AuditEvent(
            actor=actor.name, action="probe.add",
            details={"sha256": sha, "faces": len(analysis.faces), "bytes": len(data)},
        ))
        return self.store.get_probe(sha)

    def probe_bytes(self, sha256: str) -> bytes:
        """The bytes of a stored probe, checked against their hash."""
        self.store.get_probe(sha256)
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
        actor: Actor,
        probe_sha256: str,
        face: int,
        *,
        case_ref: str,
        purpose: str,
        top: int | None = None,
        threshold: float | None = None,
    ) -> SearchRow:
        """Search one face of a stored probe; the search is audited and kept as a record."""
        probe = self.store.get_probe(probe_sha256)
        if not probe.faces:
            raise InputError("no face was found in this probe; upload a clearer or larger photo")
        if not 0 <= face < len(probe.faces):
            raise InputError(
                f"face {face} does not exist: the probe has {len(probe.faces)} face(s), "
                f"numbered 0 (largest) to {len(probe.faces) - 1}"
            )
        result = self.engine.search(
            self.probe_bytes(probe_sha256), case_ref=case_ref, purpose=purpose, top=top,
            threshold=threshold, face=face, actor=actor.name,
        )
        search_id = self.store.add_search(
            actor.user_id, case_ref.strip(), purpose.strip(), probe_sha256, face,
            result.audit_id, serialize.search_result(result),
            [(c.rank, c.face_id, c.score) for c in result.candidates],
        )
        return self.store.get_search(search_id)

    # -- reviews ----------------------------------------------------------------------------
    def review(
        self, actor: Actor, search_id: int, face_id: int, decision: str, note: str
    ) -> ReviewRow:
        """Confirm or reject one candidate of someone else's search, with a note."""
        search = self.store.get_search(search_id)
        if search.user_id == actor.user_id:
            raise OwnSearchReviewError(
                f"search {search_id} is your own; another reviewer must review it "
                "(two-person rule)"
            )
        if decision not in DECISIONS:
            raise InputError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
        if not note.strip():
            raise PolicyError("a review needs a note saying why")
        row = self.store.add_review(search_id, face_id, actor.user_id, decision, note.strip())
        self.store.append_audit(
            AuditEvent(
                actor=actor.name, action="review", case_ref=search.case_ref,
                purpose=search.purpose,
                details={"search_id": search_id, "search_audit_id": search.audit_id,
                         "probe_sha256": search.probe_sha256, "face_id": face_id,
                         "decision": decision, "note": row.note},
            )
        )
        return row
