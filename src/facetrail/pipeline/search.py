"""Search: probe bytes -> faces -> nearest faces in the index -> candidates with provenance.

The score is ``1 - d`` where ``d`` is the Euclidean distance between two dlib descriptors
(see docs/scores.md): 1 means identical descriptors. Candidates are leads for a person to check.
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
    min_quality: float = 0.0
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

    candidates: list[Candidate] = []
    for probe_face in chosen:
        candidates += _nearest(request, probe_face, analysis.faces[probe_face].embedding,
                               index, store)
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
                "min_quality": request.min_quality,
                "top": request.top,
                "model": model.key,
                "gallery_faces": index.size,
            },
        )
    )
    return SearchResult(
        probe=probe, candidates=tuple(candidates), threshold=request.threshold,
        min_quality=request.min_quality, top=request.top, model=model.key,
        gallery_faces=index.size, audit_id=audit_id,
    )


def _nearest(
    request: SearchRequest, probe_face: int, query: np.ndarray, index: VectorIndex, store: Store
) -> list[Candidate]:
    """The ``top`` nearest faces at or above the threshold and the quality floor.

    Faces under the quality floor are skipped, so the index is asked for more neighbours
    until ``top`` pass or a neighbour falls under the threshold or the index is exhausted.
    """
    k = request.top if request.min_quality <= 0 else request.top * 2 + 16
    while True:
        distances, ids = index.search(query[None, :], k)
        pairs = [(int(i), float(d)) for d, i in zip(distances[0], ids[0], strict=True) if i >= 0]
        within = [(i, d) for i, d in pairs if score_of(d) >= request.threshold]
        rows = store.faces([i for i, _ in within])
        kept = [
            (rows[i], d) for i, d in within if i in rows and rows[i].quality >= request.min_quality
        ]
        exhausted = len(within) < len(pairs) or len(pairs) >= index.size
        if len(kept) >= request.top or exhausted:
            break
        k *= 4
    return [
        Candidate(
            rank=rank, face_id=row.face_id, score=score_of(distance),
            distance=round(distance, 4), box=row.box, det_score=row.det_score,
            quality=row.quality, image=row.image, appearances=row.appearances,
            probe_face=probe_face, runtime=row.runtime,
        )
        for rank, (row, distance) in enumerate(kept[: request.top], start=1)
    ]
