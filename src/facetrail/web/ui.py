"""Server-rendered pages: log in, search, results and reports, review, audit, sources.

Pages are thin: they call the same service functions as the JSON API and render Jinja2
templates. A page that fails renders an HTML error page with the status the API would give;
a caller without a session is sent to the login page.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ParamSpec
from urllib.parse import urlencode

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from facetrail import serialize
from facetrail.accounts import ROLES
from facetrail.audit import canonical_json, utc_now
from facetrail.calibration import beyond_measured, expected_in_words, rate_in_words
from facetrail.casework import SearchRecord
from facetrail.errors import (
    AuthError,
    CsrfError,
    FacetrailError,
    InputError,
    NotFoundError,
    PolicyError,
    RateLimitError,
)
from facetrail.jobs import FINISHED
from facetrail.orgs import DEFAULT_ORG_ID
from facetrail.sources.fields import web_url
from facetrail.store import AuditQuery, JobRow, SearchRow
from facetrail.store.base import AuditRow, ErrorRow
from facetrail.web.auth import (
    Principal,
    authenticate,
    check_login_form,
    csrf_token,
    end_session,
    new_login_token,
    require,
    set_login_cookie,
    start_session,
)
from facetrail.web.denials import note
from facetrail.web.deps import Id, service_of
from facetrail.web.searches import actor, read_upload, record_json
from facetrail.web.service import Service

router = APIRouter(include_in_schema=False)

P = ParamSpec("P")

HOME = {"analyst": "/search", "reviewer": "/review", "auditor": "/audit", "admin": "/sources",
        "oversight": "/audit"}
"""Each role's start page."""

NAV = (
    ("analyst", "/search", "Search"),
    ("reviewer", "/review", "Review"),
    ("auditor", "/audit", "Audit"),
    ("oversight", "/audit", "Audit"),
    ("admin", "/sources", "Sources"),
    ("admin", "/rights", "Rights"),
    ("admin", "/subject-access", "Subject access"),
)
"""(role, path, label): a page appears in the navigation only for the role that may use it."""
DEFAULT_ORG_ONLY = frozenset({"/rights", "/subject-access"})
"""Pages only the 'default' organisation's users may use (the deployment's duties)."""

STATIC_FILES = ("app.css", "app.js")
SHA256 = re.compile("[0-9a-f]{64}")

PAGE_HEADERS = {
    # Only facetrail's own script, styles and images; no inline code, no framing.
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    # Same-origin requests keep their Referer and a true Origin (no-referrer would make form
    # posts send "Origin: null"); other sites still get nothing.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
"""Headers of every page: pages show case data, so browsers must not cache them either."""


def _web_dir(name: str) -> Path:
    return Path(str(resources.files("facetrail.web").joinpath(name)))


@functools.cache
def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=_web_dir("templates"))
    templates.env.tests["web_url"] = web_url  # only http(s) URLs are ever links
    return templates


def render(
    request: Request,
    template: str,
    principal: Principal | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    path = request.url.path
    nav = [
        {"href": href, "label": label, "current": path.startswith(href)}
        for role, href, label in NAV
        if principal is not None and principal.role == role
        and (href not in DEFAULT_ORG_ONLY or principal.org_id == DEFAULT_ORG_ID)
    ]
    context.setdefault("title", "facetrail")
    context.setdefault("flashes", [])
    response = _templates().TemplateResponse(
        request,
        template,
        {"principal": principal, "csrf": csrf_token(request) if principal else "", "nav": nav,
         **context},
        status_code=status_code,
    )
    response.headers.update(PAGE_HEADERS)
    return response


def html_errors(
    handler: Callable[P, Awaitable[Response]],
) -> Callable[P, Awaitable[Response]]:
    """Show facetrail's errors as pages: no session -> the login page, others -> an error page
    with the status the API maps the error to."""

    @functools.wraps(handler)
    async def endpoint(*args: P.args, **kwargs: P.kwargs) -> Response:
        try:
            return await handler(*args, **kwargs)
        except FacetrailError as exc:
            request = kwargs["request"]
            assert isinstance(request, Request)
            return await error_page(request, exc)

    return endpoint


async def error_page(request: Request, exc: FacetrailError) -> Response:
    from facetrail.web.app import status_of  # the one status mapping; app imports this module

    note(request, exc)
    if isinstance(exc, AuthError):
        return RedirectResponse("/login", status_code=303)
    status = status_of(exc)
    principal = getattr(request.state, "principal", None)
    if principal is None:  # a role without the right: still show who is logged in
        try:
            principal = await authenticate(request)
        except FacetrailError:
            principal = None
    titles = {403: "Not allowed", 404: "Not found", 429: "Too many requests"}
    return render(
        request, "error.html", principal, status_code=status,
        title=titles.get(status, "Something went wrong"), code=exc.code, message=str(exc),
    )


async def who(request: Request, *roles: str) -> Principal:
    """The logged-in caller, if their role is one of ``roles`` (raises otherwise)."""
    return await require(*roles)(request)


# -- static files, login, logout ---------------------------------------------------------------
@router.get("/static/{path}", name="ui_static")
async def static(path: str) -> Response:
    if path not in STATIC_FILES:  # a fixed list: no request path reaches the file system
        raise NotFoundError(f"no static file {path!r}")
    return FileResponse(_web_dir("static") / path, headers={"Cache-Control": "max-age=300"})


@router.get("/")
@html_errors
async def home(request: Request) -> Response:
    principal = await who(request, *ROLES)
    return RedirectResponse(HOME[principal.role], status_code=303)


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _login_page(request)


def _login_page(request: Request, status_code: int = 200, error: str = "") -> Response:
    """The login form, with a new pre-session token in the form and in its cookie."""
    form_token = new_login_token()
    response = render(request, "login.html", None, status_code=status_code, title="Log in",
                      error=error, login_csrf=form_token)
    set_login_cookie(request, response, form_token)
    return response


@router.post("/login")
async def login(
    request: Request,
    token: Annotated[str, Form()] = "",
    form_token: Annotated[str, Form(alias="csrf_token")] = "",
) -> Response:
    response = RedirectResponse("/", status_code=303)
    try:
        check_login_form(request, form_token)
        start_session(request, response, token)
    except (AuthError, CsrfError, RateLimitError) as exc:
        from facetrail.web.app import status_of

        note(request, exc)
        page = _login_page(request, status_of(exc), f"{exc}.")
        if isinstance(exc, RateLimitError):
            page.headers["Retry-After"] = str(exc.retry_after)
        return page
    return response


@router.post("/logout")
@html_errors
async def logout(request: Request) -> Response:
    await who(request, *ROLES)
    response = RedirectResponse("/login", status_code=303)
    end_session(request, response)
    return response


# -- search (analyst) ----------------------------------------------------------------------------
@router.get("/search")
@html_errors
async def search_page(request: Request) -> Response:
    principal = await who(request, "analyst")
    return _search_form(request, principal)


def _search_form(
    request: Request, principal: Principal, status_code: int = 200, **context: Any
) -> HTMLResponse:
    engine = service_of(request).engine
    return render(
        request, "search.html", principal, status_code=status_code, title="Search",
        gallery_faces=engine.stats().store.faces,
        searches=engine.searches(by=principal.name, limit=20, actor=principal.actor),
        **context,
    )


@router.post("/search")
async def run_search(
    request: Request,
    case_ref: Annotated[str, Form()] = "",
    purpose: Annotated[str, Form()] = "",
    probe_sha256: Annotated[str, Form()] = "",
    face: Annotated[str, Form()] = "",
    probe: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """Search one face of the probe the page uploaded (or of a file sent with the form, for
    browsers without JavaScript: its largest face unless ``face`` says otherwise)."""
    try:
        principal = await who(request, "analyst")
    except FacetrailError as exc:
        return await error_page(request, exc)
    service = service_of(request)
    try:
        if not case_ref.strip() or not purpose.strip():
            raise PolicyError("a search needs a case reference and a purpose")
        if not face.strip().isdigit() and face.strip():
            raise InputError(f"the face must be a number, not {face!r}")
        if not probe_sha256 and not (probe and probe.filename):
            raise InputError("choose a probe photo first")
        found = await run_in_threadpool(
            _search, service, principal, probe_sha256, probe, int(face or 0), case_ref, purpose
        )
    except FacetrailError as exc:
        from facetrail.web.app import status_of

        return _search_form(request, principal, status_of(exc), error=f"{exc} ({exc.code})",
                            case_ref=case_ref, purpose=purpose, face=face,
                            probe_sha256=probe_sha256 if SHA256.fullmatch(probe_sha256) else "")
    return RedirectResponse(f"/searches/{found.id}", status_code=303)


def _search(
    service: Service, principal: Principal, probe_sha256: str, probe: UploadFile | None,
    face: int, case_ref: str, purpose: str,
) -> SearchRow:
    """The API's two steps in one: keep the probe (unless the page did), then search it."""
    upload = None
    if not probe_sha256 and probe is not None:
        upload = read_upload(probe, service.settings.max_upload_bytes)
    return service.search(
        actor(principal), face, case_ref=case_ref, purpose=purpose,
        probe_sha256=probe_sha256, upload=upload,
    )


# -- results and reports (analyst, reviewer) -----------------------------------------------------
def calibrated_meaning(c: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """What a candidate's calibrated fields say of its score, in words
    (``calibration.rate_in_words``), or nothing without calibration."""
    if c.get("fmr") is None:
        return []
    note = result.get("calibration") or {}
    resolution = note.get("resolution")
    extrapolated = bool(c.get("fmr_extrapolated"))
    said = [rate_in_words(c["fmr"], extrapolated, resolution)]
    if c.get("expected_false") is not None:
        said.append(expected_in_words(c["expected_false"], extrapolated, resolution,
                                      result["gallery_faces"]))
    return said


UNCALIBRATED = (
    "Scores (higher is more alike; docs/scores.md) are not calibrated: they "
    "are not probabilities and do not say how likely a false match is."
)
CALIBRATED = (
    "Scores (higher is more alike; docs/scores.md) are calibrated: each candidate says how "
    "often unrelated faces score as high."
)
THRESHOLD_RULES = {
    "calibrated": "raised by the calibration for this gallery's size",
    "floor": "the fixed floor (the calibrated threshold is lower)",
    "override": "chosen for this search",
    "fixed": "the fixed setting",
}


def threshold_view(result: dict[str, Any]) -> dict[str, str]:
    """The threshold of a search, why it is what it is, and what it means in words."""
    rule = result.get("threshold_rule") or ""
    note = result.get("calibration")
    meaning = ""
    if note and note.get("expected_false_at_threshold") is not None:
        expected, gallery = note["expected_false_at_threshold"], result["gallery_faces"]
        resolution = note.get("resolution")
        meaning = expected_in_words(expected, beyond_measured(expected, gallery, resolution),
                                    resolution, gallery)
    return {"value": f"{result['threshold']:.3f}",
            "rule": THRESHOLD_RULES.get(rule, rule), "meaning": meaning}


def below_view(result: dict[str, Any]) -> str:
    """With no candidate: the best score under the threshold, in words (records kept before
    searches said it have nothing to show)."""
    note = result.get("calibration") or {}
    for face in result.get("faces", []):
        if face["candidates"] or face["best_below"] is None:
            continue
        said = f"The best score below it was {face['best_below']:.3f}"
        if face.get("best_below_fmr") is not None:
            said += ": " + rate_in_words(face["best_below_fmr"], face["best_below_extrapolated"],
                                         note.get("resolution"))
        return said + "."
    return ""


def search_view(record: SearchRecord) -> dict[str, Any]:
    """What the results, report and review pages show of a search."""
    search = record.search
    data = record_json(record)
    result = data["result"]
    probe = result["probe"]
    candidates = []
    for c in result["candidates"]:
        decided = c["reviews"]  # every reviewer's decision, oldest first: they may disagree
        if "erased" in c:  # a tombstone: no face, image or appearance is left to show
            candidates.append({**c, "erased_note": serialize.erased_note(c),
                               "calibration": [], "decisions": decided})
            continue
        candidates.append({
            **c, "crop_href": c["crop_url"], "image_href": c["image_url"],
            "calibration": calibrated_meaning(c, result), "decisions": decided,
        })
    calibrated = result.get("calibration") is not None
    return {
        "id": search.id, "case_ref": search.case_ref, "purpose": search.purpose,
        "user": search.actor, "created_at": search.created_at, "audit_id": search.audit_id,
        "probe": probe, "probe_face": search.probe_face, "result": result,
        "probe_href": f"/api/probes/{search.probe_sha256}/image",
        "probe_crop_href": data["search"]["probe_face_crop_url"],
        "probe_boxes": [{"box": f["box"], "picked": i == search.probe_face}
                        for i, f in enumerate(probe["faces"])],
        "calibrated": calibrated,
        "score_note": CALIBRATED if calibrated else UNCALIBRATED,
        "threshold": threshold_view(result),
        "below": below_view(result),
        "candidates": candidates,
    }


def case_links(case_ref: str) -> dict[str, str]:
    """The case report's page and its download, with the case in the query: a case reference
    may hold '/' or be '..', which no path segment carries safely."""
    query = urlencode({"case": case_ref})
    return {"report_href": f"/cases/report?{query}", "export_href": f"/api/cases/report?{query}"}


@router.get("/searches/{search_id}")
@html_errors
async def results_page(request: Request, search_id: Id) -> Response:
    principal = await who(request, "analyst", "reviewer")
    record = service_of(request).engine.search_record(search_id, actor=principal.actor)
    view = search_view(record)
    links = case_links(record.search.case_ref)
    return render(request, "results.html", principal, title=f"Search #{search_id}", s=view,
                  report_href=links["report_href"], export_href=links["export_href"])


@router.get("/cases/report")
@html_errors
async def case_report_of(request: Request, case: str = "") -> Response:
    """The printable case report of ``?case=``, whatever characters the case holds."""
    return await case_report(request=request, case_ref=case)


@router.get("/cases/{case_ref:path}/report")
@html_errors
async def case_report(request: Request, case_ref: str) -> Response:
    """Every search of a case with its candidates and reviews, laid out for printing."""
    principal = await who(request, "analyst", "reviewer")
    records = service_of(request).engine.case_records(case_ref, actor=principal.actor)
    if not records:
        raise NotFoundError(f"no search of case {case_ref!r}")
    views = [search_view(r) for r in records]
    return render(request, "report.html", principal, title=f"Case {case_ref}",
                  case_ref=case_ref, searches=views, generated_at=utc_now())


# -- review (reviewer) --------------------------------------------------------------------------
@router.get("/review")
@html_errors
async def review_queue(request: Request) -> Response:
    principal = await who(request, "reviewer")
    queue = service_of(request).engine.review_queue(actor=actor(principal))
    return render(request, "review_queue.html", principal, title="Review", queue=queue)


@router.get("/review/{search_id}")
@html_errors
async def review_page(request: Request, search_id: Id, recorded: Id | None = None
                      ) -> Response:
    """A search to review; ``recorded``: the face whose decision was just recorded."""
    principal = await who(request, "reviewer")
    record = service_of(request).engine.search_to_review(search_id, actor=actor(principal))
    view = search_view(record)
    flashes = []
    mine = [r for r in record.reviews if r.face_id == recorded and r.reviewer == principal.name]
    if mine:
        flashes.append(("ok", f"Your decision on candidate face {recorded} ({mine[-1].decision})"
                              " is recorded in the audit log."))
    return render(request, "review.html", principal, title=f"Review #{search_id}", s=view,
                  flashes=flashes)


@router.post("/review/{search_id}/{face_id}")
@html_errors
async def review_decision(
    request: Request,
    search_id: Id,
    face_id: Id,
    decision: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
) -> Response:
    principal = await who(request, "reviewer")
    service_of(request).engine.review(search_id, face_id, decision, note,
                                      actor=actor(principal))
    return RedirectResponse(f"/review/{search_id}?recorded={face_id}", status_code=303)


# -- audit (auditor) -----------------------------------------------------------------------------
AUDIT_PAGE_EVENTS = 500
"""The audit page shows at most this many of the newest matching events; export has them all."""


def audit_query(actor: str, case: str, since: str, until: str) -> AuditQuery:
    """Filters from the audit page's form. Dates are UTC days, both ends included."""
    def day(value: str, name: str) -> date | None:
        if not value.strip():
            return None
        try:
            return date.fromisoformat(value.strip())
        except ValueError as exc:
            raise InputError(f"{name} must be a date like 2026-04-17") from exc

    first, last = day(since, "from"), day(until, "to")
    return AuditQuery(
        actor=actor.strip() or None,
        case_ref=case.strip() or None,
        since=first.isoformat() if first else None,
        until=(last + timedelta(days=1)).isoformat() if last else None,
    )


@router.get("/audit")
@html_errors
async def audit_page(
    request: Request, actor: str = "", case: str = "", since: str = "", until: str = ""
) -> Response:
    principal = await who(request, "auditor", "oversight")
    engine = service_of(request).engine
    query = audit_query(actor, case, since, until)
    rows = engine.audit_events(query, actor=principal.actor)
    shown = rows[-AUDIT_PAGE_EVENTS:][::-1]
    filters = {"actor": actor, "case": case, "since": since, "until": until}
    export = {k: v for k, v in (("actor", query.actor), ("case", query.case_ref),
                                ("since", query.since), ("until", query.until)) if v}
    return render(
        request, "audit.html", principal, title="Audit trail",
        verify=engine.verify_audit(), filters=filters, truncated=len(rows) > len(shown),
        events=[_event_view(r) for r in shown],
        export_href="/api/audit/export" + ("?" + urlencode(export) if export else ""),
    )


def _event_view(row: AuditRow) -> dict[str, Any]:
    e = row.event
    return {"id": row.id, "at": e.at, "actor": e.actor, "action": e.action,
            "case_ref": e.case_ref, "purpose": e.purpose, "details": canonical_json(e.details)}


# -- sources and ingest jobs (admin) -----------------------------------------------------------
def job_view(job: JobRow) -> dict[str, Any]:
    p = job.progress
    summary = (
        f"{p.get('items', 0)} items: {p.get('images_new', 0)} new images, "
        f"{p.get('duplicates', 0)} duplicates, {p.get('skipped', 0)} unchanged, "
        f"{p.get('faces', 0)} faces, {p.get('errors', 0)} errors"
    )
    if job.error:
        summary += f". {job.error}"
    # Not "items": Jinja reads job.items as the dict's own items() method.
    return {**vars(job), "done_items": p.get("items", 0), "total": p.get("total"),
            "summary": summary, "done": job.status in FINISHED}


@router.get("/sources")
@html_errors
async def sources_page(request: Request, started: int | None = None,
                       cancelled: int | None = None, shared: str | None = None,
                       unshared: str | None = None) -> Response:
    """Sources, whom the owned ones are shared with, and jobs; ``started``/``cancelled``: the
    job just started or cancelled here; ``shared``/``unshared``: 'source:org' just (un)shared
    here."""
    principal = await who(request, "admin")
    engine = service_of(request).engine
    stats = engine.stats().store
    errors: dict[str, list[ErrorRow]] = {}
    for e in engine.errors():
        errors.setdefault(e.source, []).append(e)
    shares: dict[str, list[str]] = {}
    for share in engine.shares():
        shares.setdefault(share.source, []).append(share.org)
    sources = [
        {**vars(row), "images": getattr(stats.source(row.name), "images", 0),
         "errors": len(errors.get(row.name, [])), "error_rows": errors.get(row.name, []),
         "owned": row.org_id == principal.org_id,
         # Whom a source is shared with is its owner's to know.
         "shared_with": shares.get(row.name, []) if row.org_id == principal.org_id else []}
        for row in engine.sources(actor=principal.actor)
    ]
    owned = {s["name"] for s in sources if s["owned"]}
    jobs = [job_view(j) for j in engine.jobs(limit=20) if j.source in owned]
    flashes = []
    for job in jobs:
        if job["id"] == started:
            flashes.append(("ok", f"Ingest job #{job['id']} of source {job['source']} started; "
                                  "its progress shows below."))
        if job["id"] == cancelled:
            flashes.append(("ok", f"Ingest job #{job['id']} of source {job['source']} was "
                                  "asked to stop; what it kept so far stays indexed."))
    for done, verb in ((shared, "is now shared with"), (unshared, "is no longer shared with")):
        source, _, org = (done or "").partition(":")
        if source in owned and org:
            flashes.append(("ok", f"Source {source} {verb} {org}."))
    others = [o.name for o in engine.orgs() if o.id != principal.org_id]
    return render(request, "sources.html", principal, title="Sources", sources=sources,
                  jobs=jobs, flashes=flashes, others=others)


@router.post("/sources/share")
@html_errors
async def share_source(
    request: Request,
    source: Annotated[str, Form()] = "",
    org: Annotated[str, Form()] = "",
    lawful_basis: Annotated[str, Form()] = "",
    purpose: Annotated[str, Form()] = "",
) -> Response:
    """Share an owned source with another organisation (``POST /api/sources/{name}/shares``)."""
    principal = await who(request, "admin")
    engine = service_of(request).engine
    engine.source(source, actor=principal.actor, owned=True)
    engine.share_source(source, org, lawful_basis=lawful_basis, purpose=purpose,
                        actor=principal.name)
    return RedirectResponse("/sources?" + urlencode({"shared": f"{source}:{org}"}),
                            status_code=303)


@router.post("/sources/unshare")
@html_errors
async def unshare_source(
    request: Request,
    source: Annotated[str, Form()] = "",
    org: Annotated[str, Form()] = "",
) -> Response:
    """Stop sharing an owned source with an organisation."""
    principal = await who(request, "admin")
    engine = service_of(request).engine
    engine.source(source, actor=principal.actor, owned=True)
    engine.unshare_source(source, org, actor=principal.name)
    return RedirectResponse("/sources?" + urlencode({"unshared": f"{source}:{org}"}),
                            status_code=303)


@router.post("/sources/{name}/ingest")
@html_errors
async def start_ingest(request: Request, name: str) -> Response:
    principal = await who(request, "admin")
    service_of(request).engine.source(name, actor=principal.actor, owned=True)
    job = service_of(request).jobs.submit(name, [], principal.name)
    return RedirectResponse(f"/sources?started={job.id}", status_code=303)


@router.post("/sources/jobs/{job_id}/cancel")
@html_errors
async def cancel_ingest(request: Request, job_id: Id) -> Response:
    principal = await who(request, "admin")
    engine = service_of(request).engine
    engine.source(engine.job(job_id).source, actor=principal.actor, owned=True)
    engine.cancel_job(job_id, actor=principal.name)
    return RedirectResponse(f"/sources?cancelled={job_id}", status_code=303)
