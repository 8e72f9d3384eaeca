"""The admin's Rights page: erase, opt-outs, the retention sweep, each previewed first.

Every change is two steps: the form runs a dry run and shows what would go (the faces as
crops, and for an opt-out the borderline faces, to add after review), then a confirm form runs
it. An opt-out's photos are not kept between the steps: the preview page carries them back to
the browser, base64 in its confirm form, and they reach the engine only when confirmed.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from facetrail import serialize
from facetrail.errors import FacetrailError, InputError
from facetrail.rights import ErasureReport
from facetrail.web.auth import Principal
from facetrail.web.deps import service_of
from facetrail.web.rights import check_rights, moment, read_photos
from facetrail.web.ui import error_page, html_errors, render, who

router = APIRouter(include_in_schema=False)

ERASE_WHAT = {"face": "face ids", "image": "image sha256", "source": "source"}
SHOWN_FACES = 120
"""At most this many faces of a preview are shown as crops (the counts cover them all)."""
RECENT_ERASURES = 50


async def rights_admin(request: Request) -> Principal:
    principal = await who(request, "admin")
    check_rights(principal)
    return principal


def page(request: Request, principal: Principal, status_code: int = 200,
         **context: Any) -> Response:
    engine = service_of(request).engine
    return render(
        request, "rights.html", principal, status_code=status_code, title="Rights",
        optouts=engine.optouts(actor=principal.actor),
        erasures=engine.erasures(limit=RECENT_ERASURES, actor=principal.actor),
        what=ERASE_WHAT, **context,
    )


async def failed(request: Request, principal: Principal, exc: FacetrailError,
                 **context: Any) -> Response:
    """The page again with the error said at the top and the form as it was filled."""
    from facetrail.web.app import status_of

    return page(request, principal, status_of(exc),
                flashes=[("error", f"{exc} ({exc.code})")], **context)


def report_view(report: ErasureReport) -> dict[str, Any]:
    data = serialize.erasure_report(report)
    scores = {m.face_id: m.score for m in (*report.matches, *report.borderline)}
    data["shown"] = [{"face_id": f, "score": scores.get(f)} for f in report.faces[:SHOWN_FACES]]
    data["more"] = max(0, len(report.faces) - SHOWN_FACES)
    return data


@router.get("/rights")
@html_errors
async def rights_page(request: Request) -> Response:
    return page(request, await rights_admin(request))


# -- erase by face ids, image or source --------------------------------------------------------
def face_list(text: str) -> list[int]:
    parts = text.replace(",", " ").split()
    if not parts or not all(p.isdigit() and len(p) < 19 for p in parts):
        raise InputError(f"face ids are numbers separated by commas or spaces, not {text!r}")
    return [int(p) for p in parts]


@router.post("/rights/erase")
@html_errors
async def erase(
    request: Request,
    what: Annotated[str, Form()] = "face",
    target: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    """Without ``confirm``: a dry run, shown for confirmation. With it: the erasure."""
    principal = await rights_admin(request)
    engine, actor = service_of(request).engine, principal.actor
    dry_run = confirm != "yes"
    form = {"what": what, "target": target, "reason": reason}
    try:
        if what == "face":
            report = engine.erase_faces(face_list(target), reason=reason, actor=actor,
                                        dry_run=dry_run)
        elif what == "image":
            report = engine.erase_image(target, reason=reason, actor=actor, dry_run=dry_run)
        elif what == "source":
            report = engine.remove_source(target.strip(), reason=reason, actor=actor,
                                          dry_run=dry_run)
        else:
            raise InputError(f"erase what? {what!r} is not one of {', '.join(ERASE_WHAT)}")
    except FacetrailError as exc:
        return await failed(request, principal, exc, erase_form=form)
    if dry_run:
        return render(request, "rights_preview.html", principal, title="Confirm erasure",
                      step="erase", report=report_view(report), form=form)
    return page(request, principal, done=report_view(report),
                flashes=[("ok", f"Erasure #{report.erasure_id} done: {_counts(report)}.")])


def _counts(report: ErasureReport) -> str:
    return ", ".join(f"{n} {what}" for what, n in report.counts.items())


# -- opt-out ---------------------------------------------------------------------------------
@router.post("/rights/optouts")
async def optout_preview(
    request: Request,
    photos: Annotated[list[UploadFile], File()],
    reference: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
) -> Response:
    """A dry run of the opt-out: the faces it would erase and the borderline ones."""
    try:
        principal = await rights_admin(request)
    except FacetrailError as exc:
        return await error_page(request, exc)
    service = service_of(request)
    form = {"reference": reference, "note": note}
    try:
        data = read_photos([p for p in photos if p.filename],
                           service.settings.max_upload_bytes)
        report = service.engine.add_optout(data, reference=reference, note=note,
                                           actor=principal.actor, dry_run=True)
    except FacetrailError as exc:
        return await failed(request, principal, exc, optout_form=form)
    erasure = report.erasure
    return render(
        request, "rights_preview.html", principal, title="Confirm opt-out", step="optout",
        report=report_view(erasure), form=form,
        photos=[base64.b64encode(d).decode("ascii") for d in data],
        borderline=[{"face_id": m.face_id, "score": m.score} for m in erasure.borderline],
    )


@router.post("/rights/optouts/confirm")
@html_errors
async def optout_confirm(request: Request) -> Response:
    """The opt-out with the previewed photos, then the borderline faces the admin ticked."""
    principal = await rights_admin(request)  # reads the form for its CSRF token
    form = await request.form()
    reference, note = str(form.get("reference", "")), str(form.get("note", ""))
    engine = service_of(request).engine
    try:
        photos = [base64.b64decode(str(p), validate=True) for p in form.getlist("photo")]
        also = face_list(" ".join(str(f) for f in form.getlist("also"))) \
            if form.getlist("also") else []
        report = engine.add_optout(photos, reference=reference, note=note,
                                   actor=principal.actor)
        extra = None
        if also:
            extra = engine.erase_faces(
                also, actor=principal.actor,
                reason=f"opt-out {reference.strip()}: borderline faces, reviewed")
    except binascii.Error:
        return await failed(request, principal, InputError("the preview's photos came back "
                                                           "damaged; start again"))
    except FacetrailError as exc:
        return await failed(request, principal, exc,
                            optout_form={"reference": reference, "note": note})
    said = f"Opt-out {reference.strip()} recorded: {len(report.erasure.faces)} faces erased"
    if extra is not None:
        said += f", and {len(extra.faces)} borderline faces after review"
    return page(request, principal, done=report_view(report.erasure),
                flashes=[("ok", said + ".")])


@router.post("/rights/optouts/{reference}/remove")
@html_errors
async def optout_remove(request: Request, reference: str) -> Response:
    principal = await rights_admin(request)
    service_of(request).engine.remove_optout(reference, actor=principal.actor)
    return RedirectResponse("/rights#optouts", status_code=303)


# -- retention -------------------------------------------------------------------------------
@router.post("/rights/sweep")
@html_errors
async def sweep(
    request: Request,
    as_of: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    principal = await rights_admin(request)
    dry_run = confirm != "yes"
    try:
        report = service_of(request).engine.sweep(as_of=moment(as_of), dry_run=dry_run,
                                                  actor=principal.actor)
    except FacetrailError as exc:
        return await failed(request, principal, exc, sweep_form={"as_of": as_of})
    view = serialize.sweep_report(report)
    if dry_run:
        return render(request, "rights_preview.html", principal, title="Confirm sweep",
                      step="sweep", sweep=view, form={"as_of": as_of})
    return page(request, principal, swept=view,
                flashes=[("ok", f"Retention sweep as of {report.as_of} done.")])
