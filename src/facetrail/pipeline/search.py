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
    FaceOutcome,
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
    """Further photos of the same person: one face of each photo is searched as one person."""
    photo_faces: tuple[int, ...] = ()
    """With several photos: the face of each to search, in order (empty: the largest of each)."""
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
        raise InputError("--all-faces applies to one probe photo; with several, pick the face "
                         "of each photo with --face, once per photo in order")
    photos = 1 + len(request.more_probes)
    if request.photo_faces and (request.face is not None or request.all_faces):
        raise InputError("pick the probe's face with face (or all_faces), or each photo's "
                         "with photo_faces, not both")
    if request.photo_faces and len(request.photo_faces) != photos:
        raise InputError(f"give --face once per probe photo, in order: {photos} photos, "
                         f"{len(request.photo_faces)} --face")
    if request.fusion not in FUSIONS:
        raise InputError(f"unknown fusion {request.fusion!r}; use one of {', '.join(FUSIONS)}")

    sha = imaging.sha256_hex(request.probe)
    # Only the faces searched are embedded: a crowd photo as a probe costs one face, not all.
    wanted = None if request.all_faces else (_picked(request, 0),)
    analysis = analyzer(request.probe, sha, embed=wanted)
    if not analysis.faces:
        raise NoFaceError("no face was found in the probe image; try a clearer or larger photo")
    if request.photo_faces:
        _check_face(analysis, request.photo_faces[0], "probe photo 1")
    if request.more_probes:
        return _search_fused(request, analysis, analyzer, index, store)
    if request.all_faces:
        chosen = tuple(range(len(analysis.faces)))
    else:
        chosen = (_picked(request, 0),)
        _check_face(analysis, chosen[0], "the probe")

    candidates: list[Candidate] = []
    below: dict[int, float | None] = {}
    for probe_face in chosen:
        found, below[probe_face] = _nearest(request, probe_face,
                                            analysis.faces[probe_face].embedding, index, store,
                                            analyzer.model.model)
        candidates += found
    return _finish(request, [_probe_info(analysis, chosen)], candidates, below, analyzer, index,
                   store)


def _picked(request: SearchRequest, photo: int) -> int:
    """The face to search of probe photo ``photo`` (0: the first): 0 is the largest."""
    if request.photo_faces:
        return request.photo_faces[photo]
    return request.face or 0 if photo == 0 else 0


def _check_face(analysis: ImageAnalysis, face: int, photo: str) -> None:
    if not 0 <= face < len(analysis.faces):
        raise InputError(
            f"--face {face} does not exist: {photo} has {len(analysis.faces)} face(s), "
            f"numbered 0 (largest) to {len(analysis.faces) - 1}"
        )


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
    """Several photos of one person, each represented by one face (the largest, unless
    ``photo_faces`` picks), searched as one.

    'mean' searches the mean of their descriptors; 'max' searches each photo and keeps each
    indexed face's best score (docs/scores.md compares the two)."""
    analyses = [first]
    picks = [_picked(request, 0)]
    for n, data in enumerate(request.more_probes, start=2):
        picks.append(_picked(request, n - 1))
        analysis = analyzer(data, imaging.sha256_hex(data), embed=(picks[-1],))
        if not analysis.faces:
            raise NoFaceError(f"no face was found in probe photo {n}; leave it out or replace it")
        _check_face(analysis, picks[-1], f"probe photo {n}")
        analyses.append(analysis)
    vectors = np.stack([a.faces[pick].embedding for a, pick in zip(analyses, picks, strict=True)])
    model = analyzer.model.model
    if request.fusion == "mean":
        mean = vectors.mean(axis=0)
        if model.metric == "cosine":
            # The mean of unit vectors is shorter; the index compares unit vectors.
            mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
        candidates, below = _nearest(request, 0, mean, index, store, model)
    else:
        best: dict[int, Candidate] = {}
        belows: list[float] = []
        for vector in vectors:
            found, under = _nearest(request, 0, vector, index, store, model)
            belows += [] if under is None else [under]
            for c in found:
                if c.face_id not in best or c.score > best[c.face_id].score:
                    best[c.face_id] = c
        ordered = sorted(best.values(), key=lambda c: (-c.score, c.face_id))[: request.top]
        candidates = [replace(c, rank=r) for r, c in enumerate(ordered, start=1)]
        below = max(belows, default=None)
    probes = [_probe_info(a, (pick,)) for a, pick in zip(analyses, picks, strict=True)]
    return _finish(request, probes, candidates, {0: below}, analyzer, index, store)


def _finish(
    request: SearchRequest,
    probes: list[ProbeInfo],
    candidates: list[Candidate],
    below: dict[int, float | None],
    analyzer: Analyzer,
    index: VectorIndex,
    store: Store,
) -> SearchResult:
    """Annotate the candidates with the calibration, write the audit record, build the result.
    ``below``: for each face searched, the best score under the threshold (``_nearest``)."""
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
    outcomes = tuple(_outcome(face, candidates, score, cal) for face, score in below.items())
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
        fusion=request.fusion if fused else None, metric=model.metric, outcomes=outcomes,
    )


def _outcome(face: int, candidates: list[Candidate], below: float | None,
             cal: Calibration | None) -> FaceOutcome:
    found = sum(1 for c in candidates if c.probe_face == face)
    if found or below is None:
        return FaceOutcome(face, found)
    est = cal.fmr_at(below) if cal is not None else None
    return FaceOutcome(face, 0, best_below=below,
                       best_below_fmr=None if est is None else est.fmr,
                       best_below_extrapolated=bool(est and est.extrapolated))


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
) -> tuple[list[Candidate], float | None]:
    """The ``top`` nearest faces at or above the threshold and the quality floor, and, when
    there is none, the best score under the threshold of a face the search could have returned
    (None if there is no such face among the neighbours looked at).

    Faces under the quality floor are skipped, and, unless the request asks for history,
    faces of images no longer where they were seen; so the index is asked for more neighbours
    until ``top`` pass or a neighbour falls under the threshold or the index is exhausted.
    """
    k = request.top if request.min_quality <= 0 else request.top * 2 + 16
    while True:
        distances, ids = index.search(query[None, :], k, request.allowed)
        pairs = [(int(i), float(d)) for d, i in zip(distances[0], ids[0], strict=True) if i >= 0]
        within = [(i, d) for i, d in pairs if model.score(d) >= request.threshold]
        kept = _returnable(request, store, within)
        # Fewer than k back: no more faces (allowed ones, under a filter) to find.
        exhausted = len(within) < len(pairs) or len(pairs) < k or len(pairs) >= index.size
        if len(kept) >= request.top or exhausted:
            break
        k *= 4
    below = None
    if not kept:  # what the nearest faces under the threshold scored
        under = _returnable(request, store, [(i, d) for i, d in pairs
                                             if model.score(d) < request.threshold][:BELOW])
        below = model.score(under[0][1]) if under else None
    return [
        Candidate(
            rank=rank, face_id=row.face_id, score=model.score(distance),
            distance=round(distance, 4), box=row.box, det_score=row.det_score,
            quality=row.quality, image=row.image, appearances=row.appearances,
            probe_face=probe_face, runtime=row.runtime,
        )
        for rank, (row, distance) in enumerate(kept[: request.top], start=1)
    ], below


BELOW = 32
"""How many of the nearest faces under the threshold are looked at for the best score below it
(opted-out, low-quality and gone faces are never reported, not even by their score)."""


def _returnable(request: SearchRequest, store: Store, pairs: list[tuple[int, float]]
                ) -> list[tuple[FaceRow, float]]:
    """Of ``(face id, distance)`` pairs, in order, the faces this search may return: not opted
    out, at or above the quality floor, and (unless it asks for history) still somewhere."""
    rows = store.faces([i for i, _ in pairs])
    left_out = request.exclude(list(rows)) if request.exclude is not None else set()
    if not request.history:
        rows = {i: current for i, row in rows.items() if (current := _current(row)) is not None}
    return [(rows[i], d) for i, d in pairs
            if i in rows and i not in left_out and rows[i].quality >= request.min_quality]
