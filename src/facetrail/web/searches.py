"""Routes for probes, searches, reviews and case reports.

The search is two steps for the web app (upload a probe and see its faces, then search one)
and one step for API clients (``POST /searches/upload``). Every search is audited and kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from facetrail import serialize
from facetrail.accounts import Actor
from facetrail.casework import SearchRecord
from facetrail.errors import UploadTooLargeError
from facetrail.store import ProbeRow, ReviewRow, SearchRow
from facetrail.web.auth import Principal, require
from facetrail.web.deps import MAX_ID, Id, Svc

if TYPE_CHECKING:
    from facetrail.web.service import Service

router = APIRouter()

Analyst = Annotated[Principal, Depends(require("analyst"))]
Reviewer = Annotated[Principal, Depends(require("reviewer"))]
Reader = Annotated[Principal, Depends(require("analyst", "reviewer"))]
SHA256 = r"^[0-9a-f]{64}$"


def actor(p: Principal) -> Actor:
    return p.actor


def read_upload(upload: UploadFile, limit: int) -> bytes:
    """The uploaded bytes, refused with 413 when over ``limit``."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLargeError(
            f"the upload is over the limit of {limit} bytes (FACETRAIL_MAX_UPLOAD_BYTES)"
        )
    return data


# -- JSON shapes -----------------------------------------------------------------------------
def probe_json(p: ProbeRow) -> dict[str, Any]:
    return {
        "sha256": p.sha256, "bytes": p.bytes, "width": p.width, "height": p.height,
        "format": p.format, "created_at": p.created_at,
        "image_url": f"/api/probes/{p.sha256}/image",
        "faces": [
            {"index": i, "box": list(f.box), "det_score": f.det_score, "quality": f.quality,
             "crop_url": f"/api/probes/{p.sha256}/faces/{i}/crop"}
            for i, f in enumerate(p.faces)
        ],
    }


def search_summary(s: SearchRow) -> dict[str, Any]:
    """``serialize.search_summary`` with the URLs of the search and its probe face."""
    return {
        **serialize.search_summary(s), "url": f"/api/searches/{s.id}",
        "probe_face_crop_url": f"/api/probes/{s.probe_sha256}/faces/{s.probe_face}/crop",
    }


def search_json(s: SearchRow, reviews: Sequence[ReviewRow]) -> dict[str, Any]:
    """``serialize.search_record`` with the URLs of the candidates' images and crops (none
    for an erased candidate: its ``erased`` says when and why)."""
    record = serialize.search_record(s, reviews)
    record["search"] = search_summary(s)
    record["result"]["candidates"] = [
        c if "erased" in c else
        {**c, "crop_url": f"/api/faces/{c['face_id']}/crop",
         "image_url": f"/api/images/{c['image']['sha256']}",
         "thumb_url": f"/api/images/{c['image']['sha256']}/thumb"}
        for c in record["result"]["candidates"]
    ]
    return record


def record_json(r: SearchRecord) -> dict[str, Any]:
    return search_json(r.search, r.reviews)


# -- probes ----------------------------------------------------------------------------------
@router.post("/probes", tags=["search"], status_code=201)
def upload_probe(
    who: Analyst, service: Svc, file: Annotated[UploadFile, File(description="probe image")]
) -> dict[str, Any]:
    """Upload a probe image; returns its sha256 and the faces found, largest first."""
    data = read_upload(file, service.settings.max_upload_bytes)
    return {"probe": probe_json(service.keep_probe(data, actor(who)))}


@router.get("/probes/{sha256}", tags=["search"])
def get_probe(
    sha256: Annotated[str, PathParam(pattern=SHA256)], who: Reader, service: Svc
) -> dict[str, Any]:
    return {"probe": probe_json(service.engine.probe(sha256, actor=actor(who)))}


# -- searches --------------------------------------------------------------------------------
class SearchIn(BaseModel):
    probe_sha256: str = Field(pattern=SHA256)
    face: int = Field(default=0, ge=0, le=MAX_ID,
                      description="Index of the probe face, 0 = largest.")
    case_ref: str = Field(min_length=1, description="Case reference; recorded in the audit.")
    purpose: str = Field(min_length=1, description="Why this search is made; audited.")
    top: int | None = Field(default=None, ge=1, le=200)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    history: bool = Field(default=False, description=(
        "Also find images no longer where they were seen; their appearances carry gone_at."))


def run_search(service: Service, who: Principal, body: SearchIn) -> JSONResponse:
    search = service.search(
        actor(who), body.face, case_ref=body.case_ref, purpose=body.purpose,
        probe_sha256=body.probe_sha256, top=body.top, threshold=body.threshold,
        history=body.history,
    )
    return JSONResponse(search_json(search, []), status_code=201)


@router.post("/searches", tags=["search"], status_code=201)
def search(body: SearchIn, who: Analyst, service: Svc) -> JSONResponse:
    """Search one face of an uploaded probe. Case reference and purpose are required."""
    return run_search(service, who, body)


@router.post("/searches/upload", tags=["search"], status_code=201)
def search_upload(
    who: Analyst,
    service: Svc,
    file: Annotated[UploadFile, File(description="probe image")],
    case_ref: Annotated[str, Form(min_length=1)],
    purpose: Annotated[str, Form(min_length=1)],
    face: Annotated[int, Form(ge=0, le=MAX_ID)] = 0,
    top: Annotated[int | None, Form(ge=1, le=200)] = None,
    threshold: Annotated[float | None, Form(ge=-1.0, le=1.0)] = None,
) -> JSONResponse:
    """Upload a probe and search it in one step (face 0, the largest, unless told)."""
    data = read_upload(file, service.settings.max_upload_bytes)
    found = service.search(
        actor(who), face, case_ref=case_ref, purpose=purpose, upload=data, top=top,
        threshold=threshold,
    )
    return JSONResponse(search_json(found, []), status_code=201)


@router.get("/searches", tags=["search"])
def list_searches(
    who: Reader, service: Svc, case: str | None = None,
    mine: bool = False, limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Searches, newest first, optionally of one case or only the caller's."""
    rows = service.engine.searches(case_ref=case or None, by=who.name if mine else None,
                                   limit=limit, actor=actor(who))
    return {"searches": [search_summary(s) for s in rows]}


@router.get("/searches/{search_id}", tags=["search"])
def get_search(search_id: Id, who: Reader, service: Svc) -> dict[str, Any]:
    """A search with its candidates, their appearances and their reviews."""
    return record_json(service.engine.search_record(search_id, actor=actor(who)))


# -- reviews ---------------------------------------------------------------------------------
class ReviewIn(BaseModel):
    face_id: int = Field(ge=0, le=MAX_ID)
    decision: str = Field(pattern="^(confirm|reject)$")
    note: str = Field(min_length=1)


@router.post("/searches/{search_id}/reviews", tags=["review"], status_code=201)
def review(search_id: Id, body: ReviewIn, who: Reviewer, service: Svc) -> dict[str, Any]:
    """Confirm or reject a candidate of someone else's search (two-person rule), with a note."""
    row = service.engine.review(search_id, body.face_id, body.decision, body.note,
                                actor=actor(who))
    return {"review": serialize.review(row)}


@router.get("/reviews/queue", tags=["review"])
def review_queue(who: Reviewer, service: Svc) -> dict[str, Any]:
    """Searches by others with candidates no one has reviewed yet, newest first."""
    rows = service.engine.review_queue(actor=actor(who))
    return {"searches": [search_summary(s) for s in rows]}


# -- case reports ----------------------------------------------------------------------------
ReportFormat = Annotated[str, Query(pattern="^(json|csv)$")]


@router.get("/cases/report", tags=["search"])
def case_report_of(
    case: Annotated[str, Query(min_length=1, description="The case reference.")],
    who: Reader, service: Svc, format: ReportFormat = "json",  # noqa: A002
) -> Response:
    """The case report of ``?case=``: for any case reference, '/' and '..' included, which a
    path segment cannot carry safely."""
    return case_report(case, who, service, format)


@router.get("/cases/{case_ref:path}/report", tags=["search"])
def case_report(
    case_ref: str, who: Reader, service: Svc,
    format: ReportFormat = "json",  # noqa: A002
) -> Response:
    """Every search of a case with its candidates, appearances and reviews, as JSON or CSV.

    CSV has one row per candidate appearance; ``decisions`` lists the reviews as
    ``reviewer:decision``."""
    searches = [record_json(r) for r in service.engine.case_records(case_ref,
                                                                     actor=actor(who))]
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case_ref)
    if format == "json":
        return JSONResponse(
            serialize.case_report(case_ref, searches),
            headers={"Content-Disposition": f'attachment; filename="case-{name}.json"'},
        )
    return Response(
        serialize.case_report_csv(searches), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="case-{name}.csv"'},
    )
