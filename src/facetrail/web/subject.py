"""Subject access over HTTP: ``POST /api/subject-access`` returns the JSON report, and the
page ``/subject-access`` shows the same report in the browser, crops inline as data URIs.

Admins only; the engine admits those of the 'default' organisation (``Rights.check``: 403
for the others). The photos are read into memory, used and dropped: nothing keeps them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from facetrail import subject_access
from facetrail.errors import FacetrailError, InputError
from facetrail.web.auth import Principal, require
from facetrail.web.deps import Svc, service_of
from facetrail.web.searches import read_upload
from facetrail.web.service import Service
from facetrail.web.ui import error_page, render, who

router = APIRouter()
"""The JSON API's route, mounted under ``/api``."""
pages = APIRouter(include_in_schema=False)

Admin = Annotated[Principal, Depends(require("admin"))]
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
            "form-action 'self'; frame-ancestors 'none'")
"""The pages' policy (``ui.PAGE_HEADERS``), letting images come as data URIs: a report's crops
(only a page showing a report gets it)."""


def run(service: Service, who: Principal, photos: list[UploadFile], reference: str,
        include_cases: bool, threshold: float | None) -> dict[str, Any]:
    limit = service.settings.max_upload_bytes
    data = [read_upload(p, limit) for p in photos if p.filename or p.size]
    if not data:
        raise InputError("send at least one photo of the person")
    report = service.engine.subject_access(data, reference=reference, actor=who.actor,
                                           include_cases=include_cases, threshold=threshold)
    return subject_access.report_json(report)


@router.post("/subject-access", tags=["rights"])
def post_subject_access(
    who: Admin,
    service: Svc,
    photos: Annotated[list[UploadFile], File(description="photos of the person")],
    reference: Annotated[str, Form(min_length=1, description="the request's reference")],
    include_cases: Annotated[bool, Form(description="disclose the searches' case references "
                                        "and purposes (they may be confidential)")] = False,
    threshold: Annotated[float | None, Form(ge=-1.0, le=1.0)] = None,
) -> dict[str, Any]:
    """What is held about the person in the photos (largest face of each; not kept): the
    report, schema ``facetrail.subject-access/1``, crops as data URIs. Audited."""
    return run(service, who, photos, reference, include_cases, threshold)


# -- the page (admin) ---------------------------------------------------------------------------
def _page(request: Request, principal: Principal, status_code: int = 200,
          **context: Any) -> Response:
    engine = service_of(request).engine
    context.setdefault("reference", "")
    context.setdefault("threshold", "")
    context.setdefault("include_cases", False)
    context.setdefault("r", None)
    response = render(request, "subject_access.html", principal, status_code=status_code,
                      title="Subject access",
                      default_threshold=engine.optout_threshold, **context)
    if context["r"] is not None:
        response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


@pages.get("/subject-access")
async def subject_access_page(request: Request) -> Response:
    try:
        principal = await who(request, "admin")
    except FacetrailError as exc:
        return await error_page(request, exc)
    return _page(request, principal)


@pages.post("/subject-access")
async def subject_access_report(
    request: Request,
    reference: Annotated[str, Form()] = "",
    threshold: Annotated[str, Form()] = "",
    include_cases: Annotated[str, Form()] = "",
    photos: Annotated[list[UploadFile] | None, File()] = None,
) -> Response:
    from facetrail.web.app import status_of
    try:
        principal = await who(request, "admin")
    except FacetrailError as exc:
        return await error_page(request, exc)
    wanted = include_cases.lower() in ("true", "on", "1")
    try:
        if not reference.strip():
            raise InputError("a subject access request needs its reference")
        try:
            level = float(threshold) if threshold.strip() else None
        except ValueError:
            raise InputError(f"the threshold must be a number, not {threshold!r}") from None
        document = await run_in_threadpool(run, service_of(request), principal,
                                           photos or [], reference, wanted, level)
    except FacetrailError as exc:
        return _page(request, principal, status_of(exc), error=f"{exc} ({exc.code})",
                     reference=reference, threshold=threshold, include_cases=wanted)
    return _page(request, principal, reference=reference, threshold=threshold,
                 include_cases=wanted, r=document)
