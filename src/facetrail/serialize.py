"""The stable JSON form of facetrail's results and records (documented in docs/json.md and
docs/api.md). The CLI's ``--json`` and the HTTP API print the same shapes; the API adds URLs.

Fields are only ever added, never renamed or removed, within a ``schema`` version.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from facetrail.faces.base import SCORE_MEANING
from facetrail.records import (
    Appearance,
    BuildReport,
    CalibrationNote,
    Candidate,
    FaceOutcome,
    IndexInfo,
    IngestReport,
    ProbeInfo,
    SearchResult,
)
from facetrail.store import ErrorRow, JobRow, ReviewRow, SearchRow, SourceRow
from facetrail.store.base import ErasureRow, OptoutRow, OrgRow, ShareRow

if TYPE_CHECKING:
    from facetrail.rights import ErasureReport, Match, OptoutReport, SweepReport

SEARCH_SCHEMA = "facetrail.search/1"
LEADS = ("Candidates are investigative leads, not identifications; each must be checked by a "
         "person.")


def appearance(a: Appearance) -> dict[str, Any]:
    return {
        "source": a.source,
        "location": a.location,
        "source_url": a.source_url,
        "page_url": a.page_url,
        "page_urls": list(a.page_urls),
        "captured_at": a.captured_at,
        "title": a.title,
        "record_id": a.record_id,
        "gone_at": a.gone_at,
    }


def candidate(c: Candidate) -> dict[str, Any]:
    return {
        "rank": c.rank,
        "probe_face": c.probe_face,
        "face_id": c.face_id,
        "score": c.score,
        "distance": c.distance,
        "box": list(c.box),
        "det_score": c.det_score,
        "quality": c.quality,
        "runtime": c.runtime,
        "image": {"sha256": c.image.sha256, "width": c.image.width, "height": c.image.height},
        "appearances": [appearance(a) for a in c.appearances],
        "fmr": c.fmr,
        "fmr_extrapolated": c.fmr_extrapolated,
        "expected_false": c.expected_false,
    }


def probe_info(p: ProbeInfo) -> dict[str, Any]:
    return {
        "sha256": p.sha256,
        "width": p.width,
        "height": p.height,
        "faces": [
            {"box": list(f.box), "det_score": f.det_score, "quality": f.quality}
            for f in p.faces
        ],
        "searched_faces": list(p.searched_faces),
    }


def calibration_note(n: CalibrationNote | None) -> dict[str, Any] | None:
    if n is None:
        return None
    return {
        "source": n.source, "genuine": n.genuine, "impostor": n.impostor,
        "resolution": n.resolution, "fpir_target": n.fpir_target,
        "calibrated_threshold": n.calibrated_threshold,
        "expected_false_at_threshold": n.expected_false_at_threshold,
    }


def search_result(r: SearchResult) -> dict[str, Any]:
    return {
        "schema": SEARCH_SCHEMA,
        "notice": LEADS,
        "probe": probe_info(r.probe),
        "probes": [probe_info(p) for p in r.probes] or [probe_info(r.probe)],
        "fusion": r.fusion,
        "threshold": r.threshold,
        "threshold_rule": r.threshold_rule,
        "calibration": calibration_note(r.calibration),
        "min_quality": r.min_quality,
        "top": r.top,
        "model": r.model,
        "metric": r.metric,
        "score": SCORE_MEANING[r.metric],
        "gallery_faces": r.gallery_faces,
        "audit_id": r.audit_id,
        "candidates": [candidate(c) for c in r.candidates],
        "faces": [face_outcome(o) for o in r.outcomes],
    }


def face_outcome(o: FaceOutcome) -> dict[str, Any]:
    return {"probe_face": o.probe_face, "candidates": o.candidates, "best_below": o.best_below,
            "best_below_fmr": o.best_below_fmr,
            "best_below_extrapolated": o.best_below_extrapolated}


def ingest_report(r: IngestReport) -> dict[str, Any]:
    return {
        "run_id": r.run_id, "source": r.source, "items": r.items, "images_new": r.images_new,
        "duplicates": r.duplicates, "skipped": r.skipped, "faces": r.faces,
        "errors": r.errors, "suppressed": r.suppressed, "gone": r.gone, "seconds": r.seconds,
    }


def error_row(e: ErrorRow) -> dict[str, Any]:
    return {"source": e.source, "location": e.location, "code": e.code, "reason": e.reason,
            "run_id": e.run_id, "at": e.at}


def index_info(info: IndexInfo) -> dict[str, Any]:
    return {
        "backend": info.backend, "kind": info.kind, "faces": info.faces,
        "memory_bytes": info.memory_bytes, "memory_per_face": round(info.memory_per_face, 2),
        "recall_at_10": info.recall_at_10, "built_at": info.built_at,
        "refused": info.refused, "why": info.why, "details": dict(info.details),
    }


def build_report(report: BuildReport) -> dict[str, Any]:
    return {
        "backend": report.backend, "kind": report.kind, "built_kind": report.built_kind,
        "faces": report.faces, "recall_at_10": report.recall_at_10, "seconds": report.seconds,
        "refused": report.refused, "why": report.why, "message": report.message,
        "details": dict(report.details),
    }


def source(s: SourceRow) -> dict[str, Any]:
    return {"id": s.id, "name": s.name, "kind": s.kind, "uri": s.uri,
            "lawful_basis": s.lawful_basis, "purpose": s.purpose,
            "retention_days": s.retention_days, "created_at": s.created_at,
            "created_by": s.created_by, "org": s.org}


def org(o: OrgRow) -> dict[str, Any]:
    return {"id": o.id, "name": o.name, "created_at": o.created_at, "created_by": o.created_by}


def share(s: ShareRow) -> dict[str, Any]:
    return {"source": s.source, "org": s.org, "lawful_basis": s.lawful_basis,
            "purpose": s.purpose, "created_at": s.created_at, "created_by": s.created_by}


def job(j: JobRow) -> dict[str, Any]:
    return {"id": j.id, "source": j.source, "paths": list(j.paths), "status": j.status,
            "created_by": j.created_by, "created_at": j.created_at, "started_at": j.started_at,
            "finished_at": j.finished_at, "attempts": j.attempts, "run_ids": list(j.run_ids),
            "progress": j.progress, "error": j.error}


def review(r: ReviewRow) -> dict[str, Any]:
    return {"id": r.id, "search_id": r.search_id, "face_id": r.face_id, "reviewer": r.reviewer,
            "decision": r.decision, "note": r.note, "at": r.at}


def search_summary(s: SearchRow) -> dict[str, Any]:
    """A kept search without its result: who, when, for which case, how far reviewed."""
    return {
        "id": s.id, "actor": s.actor, "case_ref": s.case_ref, "purpose": s.purpose,
        "created_at": s.created_at, "probe_sha256": s.probe_sha256, "probe_face": s.probe_face,
        "audit_id": s.audit_id, "candidates": s.candidates, "pending": s.pending,
    }


def search_record(s: SearchRow, reviews: Sequence[ReviewRow]) -> dict[str, Any]:
    """A kept search with its result; each candidate lists its reviews."""
    result = dict(s.result)
    result["candidates"] = [
        {**c, "reviews": [review(r) for r in reviews if r.face_id == c["face_id"]]}
        for c in s.result.get("candidates", [])
    ]
    return {"search": search_summary(s), "result": result}


def case_report(case_ref: str, searches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A case's report: ``searches`` are ``search_record`` forms, oldest first."""
    return {"case_ref": case_ref, "notice": LEADS, "searches": list(searches)}


REPORT_COLUMNS = (
    "search_id", "searched_at", "analyst", "case_ref", "purpose", "probe_sha256", "probe_face",
    "rank", "face_id", "score", "image_sha256", "source", "location", "source_url", "page_url",
    "captured_at", "decisions", "gone_at", "erased",
)


def case_report_csv(searches: Sequence[dict[str, Any]]) -> str:
    """A case's report as CSV, one row per candidate appearance; ``decisions`` lists the
    reviews as ``reviewer:decision``. ``searches`` are ``search_record`` forms."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(REPORT_COLUMNS)
    for s in searches:
        meta = s["search"]
        for c in s["result"]["candidates"]:
            decisions = " ".join(f"{r['reviewer']}:{r['decision']}" for r in c["reviews"])
            image = c.get("image") or {}  # an erased candidate keeps no image nor appearance
            for a in c.get("appearances") or [{}]:
                writer.writerow([_cell(v) for v in (
                    meta["id"], meta["created_at"], meta["actor"], meta["case_ref"],
                    meta["purpose"], meta["probe_sha256"], meta["probe_face"], c["rank"],
                    c["face_id"], c["score"], image.get("sha256"), a.get("source"),
                    a.get("location"), a.get("source_url"), a.get("page_url"),
                    a.get("captured_at"), decisions, a.get("gone_at"), erased_note(c),
                )])
    return out.getvalue()


def erased_note(c: dict[str, Any]) -> str | None:
    """"erased on DATE (reason)" for a kept candidate that was erased since, else None."""
    erased = c.get("erased")
    if not erased:
        return None
    return f"erased on {str(erased['at'])[:10]} ({erased['reason']})"


def _cell(value: object) -> object:
    """Text that a spreadsheet would run as a formula is quoted."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


# -- the rights of the people in the photos ----------------------------------------------------
def match(m: Match) -> dict[str, Any]:
    return {"face_id": m.face_id, "score": m.score}


def erasure_report(r: ErasureReport) -> dict[str, Any]:
    """What an erasure removed, or on a dry run would remove (``erasure_id`` is then None)."""
    return {
        "kind": r.kind, "target": r.target, "reason": r.reason, "dry_run": r.dry_run,
        "erasure_id": r.erasure_id, "counts": dict(r.counts), "face_ids": list(r.faces),
        "image_sha256s": list(r.sha256s), "index_removed": r.index_removed,
        "files_removed": r.files_removed, "scrubbed": list(r.scrubbed),
        "matches": [match(m) for m in r.matches],
        "borderline": [match(m) for m in r.borderline],
    }


def erasure(e: ErasureRow) -> dict[str, Any]:
    return {"id": e.id, "at": e.at, "actor": e.actor, "kind": e.kind, "target": e.target,
            "reason": e.reason, "counts": dict(e.counts)}


def optout(o: OptoutRow) -> dict[str, Any]:
    return {"reference": o.reference, "note": o.note, "photos": o.photos,
            "templates": o.templates, "created_at": o.created_at, "created_by": o.created_by,
            "org": o.org}


def optout_report(r: OptoutReport) -> dict[str, Any]:
    """``optout`` is None on a dry run."""
    return {"optout": optout(r.optout) if r.optout is not None else None,
            "erasure": erasure_report(r.erasure)}


def sweep_report(r: SweepReport) -> dict[str, Any]:
    return {
        "as_of": r.as_of, "dry_run": r.dry_run,
        "sources": [{"source": e.source, "retention_days": e.retention_days,
                     "cutoff": e.cutoff, "counts": dict(e.counts)} for e in r.sources],
        "no_retention": [e.source for e in r.sources if e.retention_days is None],
        "probes": r.probes, "searches": r.searches,
        "erasures": [erasure_report(e) for e in r.erasures],
    }
