"""Search: probe bytes -> faces -> nearest faces in the index -> candidates with provenance.

The score is ``1 - d`` where ``d`` is the Euclidean distance between two dlib descriptors
(see docs/scores.md): 1 means identical descriptors, and the default threshold 0.4 is dlib's
customary same-person rule ``d < 0.6``. Candidates are leads for a person to check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facetrail import imaging
from facetrail.audit import AuditEvent
from facetrail.errors import InputError, NoFaceError, PolicyError
from facetrail.index.base import VectorIndex
from facetrail.pipeline.analyze import Analyzer
from facetrail.records import Candidate, ProbeFace, ProbeInfo, SearchResult
from facetrail.store import Store


@dataclass(frozen=True)
class SearchRequest:
    probe: bytes
    case_ref: str
    purpose: str
    actor: str
    top: int
    threshold: float
    face: int | None = None
    all_faces: bool = False


def score_of(distance: float) -> float:
    return round(1.0 - float(distance), 4)


def search(
    request: SearchRequest, analyzer: Analyzer, index: VectorIndex, store: Store
) -> SearchResult:
    if not request.case_ref.strip():
        raise PolicyError("a search needs a case reference (--case)")
    if not request.purpose.strip():
        raise PolicyError("a search needs a purpose (--purpose)")
    if request.top < 1:
        raise InputError("--top must be at least 1")
    if request.face is not None and request.all_faces:
        raise InputError("use either --face N or --all-faces, not both")

    sha = imaging.sha256_hex(request.probe)
    analysis = analyzer(request.probe, sha)
    if not analysis.faces:
        raise NoFaceError("no face was found in the probe image; try a clearer or larger photo")
    if request.all_faces:
        chosen = tuple(range(len(analysis.faces)))
    else:
        chosen = (request.face or 0,)
        if not 0 <= chosen[0] < len(analysis.faces):
            raise InputError(
                f"--face {chosen[0]} does not exist: the probe has {len(analysis.faces)} "
                f"face(s), numbered 0 (largest) to {len(analysis.faces) - 1}"
            )

    queries = np.stack([analysis.faces[i].embedding for i in chosen])
    distances, ids = index.search(queries, request.top)
    hits: list[tuple[int, int, float]] = []  # (probe face, face_id, distance)
    for row, probe_face in enumerate(chosen):
        for distance, face_id in zip(distances[row], ids[row], strict=True):
            if face_id >= 0 and score_of(distance) >= request.threshold:
                hits.append((probe_face, int(face_id), float(distance)))
    rows = store.faces([face_id for _, face_id, _ in hits])
    candidates: list[Candidate] = []
    rank: dict[int, int] = {}
    for probe_face, face_id, distance in hits:
        found = rows.get(face_id)
        if found is None:  # removed from the store after the index was read
            continue
        rank[probe_face] = rank.get(probe_face, 0) + 1
        candidates.append(
            Candidate(
                rank=rank[probe_face], face_id=face_id, score=score_of(distance),
                distance=round(distance, 4), box=found.box, det_score=found.det_score,
                quality=found.quality, image=found.image, appearances=found.appearances,
                probe_face=probe_face,
            )
        )
    probe = ProbeInfo(
        sha256=sha, width=analysis.width, height=analysis.height,
        faces=tuple(ProbeFace(f.box, f.det_score, f.quality) for f in analysis.faces),
        searched_faces=chosen,
    )
    model = analyzer.backend.model
    audit_id = store.append_audit(
        AuditEvent(
            actor=request.actor,
            action="search",
            case_ref=request.case_ref.strip(),
            purpose=request.purpose.strip(),
            details={
                "probe_sha256": sha,
                "searched_faces": list(chosen),
                "candidate_face_ids": [c.face_id for c in candidates],
                "threshold": request.threshold,
                "top": request.top,
                "model": model.key,
                "gallery_faces": index.size,
            },
        )
    )
    return SearchResult(
        probe=probe, candidates=tuple(candidates), threshold=request.threshold,
        top=request.top, model=model.key, gallery_faces=index.size, audit_id=audit_id,
    )
