"""Search: probe bytes -> faces -> nearest faces in the index -> candidates with provenance.

The score follows the face model's metric (``ModelInfo.score``): the cosine similarity of two
unit vectors for SFace, ``1 - d`` for the Euclidean distance ``d`` of two dlib descriptors; 1
means identical vectors (docs/scores.md). Candidates are leads for a person to check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from facetrail import imaging
from facetrail.audit import AuditEvent
from facetrail.calibration import Calibration
from facetrail.errors import InputError, NoFaceError, PolicyError
from facetrail.faces.base import ModelInfo
from facetrail.index.base import VectorIndex
from facetrail.pipeline.analyze import Analyzer
from facetrail.records import (
    CalibrationNote,
    Candidate,
    ImageAnalysis,
    ProbeFace,
    ProbeInfo,
    SearchResult,
)
from facetrail.store import FaceRow, Store


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
    more_probes: tuple[bytes, ...] = ()
    """Further photos of the same person: all photos' largest faces are searched as one."""
    fusion: str = "mean"
    calibration: Calibration | None = None
    fpir_target: float = 0.01
    threshold_rule: str = "fixed"
    calibrated_threshold: float | None = None
    gallery_faces: int | None = None
    """Indexed faces a search can return (those at or above ``min_quality``): the N of the
    expected false candidates, N x FMR. None: every indexed face."""
    allowed: np.ndarray | None = None
    """The face ids the search may return, a sorted int64 array (the faces of the sources an
    organisation may see); the index filters inside its search, so ``top`` allowed
    candidates come back when there are that many. None: every face."""
    org: str | None = None
    """The organisation the search is made for, recorded in its audit event."""
    exclude: Callable[[Sequence[int]], set[int]] | None = None
    """Of the face ids given, those a search must never return (faces matching an opt-out)."""
    history: bool = False
    """Also return faces of images no longer where they were seen, with those appearances
    (``gone_at`` set). Without it, a candidate's image is current somewhere, and only its
    current appearances are listed."""


FUSIONS = ("mean", "max")


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

    if request.more_probes and (request.face is not None or request.all_faces):
        raise InputError("--face and --all-faces apply to one probe photo, not several")
    if request.fusion not in FUSIONS:
        raise InputError(f"unknown fusion {request.fusion!r}; use one of {', '.join(FUSIONS)}")

    sha = imaging.sha256_hex(request.probe)
    # Only the faces searched are embedded: a crowd photo as a probe costs one face, not all.
    wanted = None if request.all_faces else (request.face or 0,)
    analysis = analyzer(request.probe, sha, embed=wanted)
    if not analysis.faces:
        raise NoFaceError("no face was found in the probe image; try a clearer or larger photo")
    if request.more_probes:
        return _search_fused(request, analysis, analyzer, index, store)
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
                               index, store, analyzer.model.model)
    return _finish(request, [_probe_info(analysis, chosen)], candidates, analyzer, index, store)


def _probe_info(analysis: ImageAnalysis, chosen: tuple[int, ...]) -> ProbeInfo:
    return ProbeInfo(
        sha256=analysis.sha256, width=analysis.width, height=analysis.height,
        faces=tuple(ProbeFace(f.box, f.det_score, f.quality) for f in analysis.faces),
        searched_faces=chosen,
    )


def _search_fused(
    request: SearchRequest,
    first: ImageAnalysis,
    analyzer: Analyzer,
    index: VectorIndex,
    store: Store,
) -> SearchResult:
    """Several photos of one person, each represented by its largest face, searched as one.

    'mean' searches the mean of their descriptors; 'max' searches each photo and keeps each
    indexed face's best score (docs/scores.md compares the two)."""
    analyses = [first]
    for n, data in enumerate(request.more_probes, start=2):
        analysis = analyzer(data, imaging.sha256_hex(data), embed=(0,))
        if not analysis.faces:
            raise NoFaceError(f"no face was found in probe photo {n}; leave it out or replace it")
        analyses.append(analysis)
    vectors = np.stack([a.faces[0].embedding for a in analyses])
    model = analyzer.model.model
    if request.fusion == "mean":
        mean = vectors.mean(axis=0)
        if model.metric == "cosine":
            # The mean of unit vectors is shorter; the index compares unit vectors.
            mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
        candidates = _nearest(request, 0, mean, index, store, model)
    else:
        best: dict[int, Candidate] = {}
        for vector in vectors:
            for c in _nearest(request, 0, vector, index, store, model):
                if c.face_id not in best or c.score > best[c.face_id].score:
                    best[c.face_id] = c
        ordered = sorted(best.values(), key=lambda c: (-c.score, c.face_id))[: request.top]
        candidates = [replace(c, rank=r) for r, c in enumerate(ordered, start=1)]
    probes = [_probe_info(a, (0,)) for a in analyses]
    return _finish(request, probes, candidates, analyzer, index, store)


def _finish(
    request: SearchRequest,
    probes: list[ProbeInfo],
    candidates: list[Candidate],
    analyzer: Analyzer,
    index: VectorIndex,
    store: Store,
) -> SearchResult:
    """Annotate the candidates with the calibration, write the audit record, build the result."""
    probe, chosen, sha = probes[0], probes[0].searched_faces, probes[0].sha256
    gallery = request.gallery_faces if request.gallery_faces is not None else index.size
    note = None
    cal = request.calibration
    if cal is not None:
        candidates = [_calibrated(c, cal, gallery) for c in candidates]
        note = CalibrationNote(
            source=cal.source, genuine=cal.genuine, impostor=cal.impostor,
            resolution=cal.resolution, fpir_target=request.fpir_target,
            calibrated_threshold=(
                request.calibrated_threshold
                if request.calibrated_threshold is not None
                else cal.threshold_for_gallery(gallery, request.fpir_target)
            ),
            expected_false_at_threshold=gallery * cal.fmr_at(request.threshold).fmr,
        )
    fused = len(probes) > 1
    model = analyzer.model.model
    audit_id = store.append_audit(
        AuditEvent(
            actor=request.actor,
            action="search",
            org=request.org,
            case_ref=request.case_ref.strip(),
            purpose=request.purpose.strip(),
            details={
                "probe_sha256": sha,
                **({"probe_sha256s": [p.sha256 for p in probes], "fusion": request.fusion}
                   if fused else {}),
                "searched_faces": list(chosen),
                "candidate_face_ids": [c.face_id for c in candidates],
                "threshold": request.threshold,
                "threshold_rule": request.threshold_rule,
                "min_quality": request.min_quality,
                "top": request.top,
                "model": model.key,
                "gallery_faces": gallery,
                **({"allowed_faces": len(request.allowed)}
                   if request.allowed is not None else {}),
                **({"history": True} if request.history else {}),
            },
        )
    )
    return SearchResult(
        probe=probe, candidates=tuple(candidates), threshold=request.threshold,
        min_quality=request.min_quality, top=request.top, model=model.key,
        gallery_faces=gallery, audit_id=audit_id, threshold_rule=request.threshold_rule,
        calibration=note, probes=tuple(probes) if fused else (),
        fusion=request.fusion if fused else None, metric=model.metric,
    )


def _calibrated(c: Candidate, cal: Calibration, gallery_faces: int) -> Candidate:
    est = cal.fmr_at(c.score)
    return replace(c, fmr=est.fmr, fmr_extrapolated=est.extrapolated,
                   expected_false=gallery_faces * est.fmr)


def _current(row: FaceRow) -> FaceRow | None:
    """``row`` with only the appearances where its image still is; None if it is nowhere."""
    seen = tuple(a for a in row.appearances if a.gone_at is None)
    return replace(row, appearances=seen) if seen else None


def _nearest(
    request: SearchRequest, probe_face: int, query: np.ndarray, index: VectorIndex, store: Store,
    model: ModelInfo,
) -> list[Candidate]:
    """The ``top`` nearest faces at or above the threshold and the quality floor.

    Faces under the quality floor are skipped, and, unless the request asks for history,
    faces of images no longer where they were seen; so the index is asked for more neighbours
    until ``top`` pass or a neighbour falls under the threshold or the index is exhausted.
    """
    k = request.top if request.min_quality <= 0 else request.top * 2 + 16
    while True:
        distances, ids = index.search(query[None, :], k, request.allowed)
        pairs = [(int(i), float(d)) for d, i in zip(distances[0], ids[0], strict=True) if i >= 0]
        within = [(i, d) for i, d in pairs if model.score(d) >= request.threshold]
        rows = store.faces([i for i, _ in within])
        left_out = request.exclude(list(rows)) if request.exclude is not None else set()
        if not request.history:
            rows = {i: current for i, row in rows.items()
                    if (current := _current(row)) is not None}
        kept = [
            (rows[i], d) for i, d in within
            if i in rows and i not in left_out and rows[i].quality >= request.min_quality
        ]
        # Fewer than k back: no more faces (allowed ones, under a filter) to find.
        exhausted = len(within) < len(pairs) or len(pairs) < k or len(pairs) >= index.size
        if len(kept) >= request.top or exhausted:
            break
        k *= 4
    return [
        Candidate(
            rank=rank, face_id=row.face_id, score=model.score(distance),
            distance=round(distance, 4), box=row.box, det_score=row.det_score,
            quality=row.quality, image=row.image, appearances=row.appearances,
            probe_face=probe_face, runtime=row.runtime,
        )
        for rank, (row, distance) in enumerate(kept[: request.top], start=1)
    ]
