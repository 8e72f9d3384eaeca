"""The rights of the people in the photos over HTTP: erasure, opt-out, retention sweep.

These are the deployment's duties (``facetrail.rights``): only an admin of the 'default'
organisation carries them out. Every route checks that before it reads an upload, and answers
403 to anyone else, as every role check does; the engine checks again and audits what it did.

    POST   /erasures            {face_ids | image | source, reason, dry_run}
    POST   /erasures/photos     multipart: photos, reason, threshold?, dry_run
    GET    /erasures            past erasures, newest first
    POST   /optouts             multipart: photos, reference, note, dry_run
    GET    /optouts, DELETE /optouts/{reference}
    POST   /retention/sweep     {as_of?, dry_run}
    DELETE /sources/{name}      ?reason=&dry_run= (or a JSON body): removes the source
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from facetrail import serialize
from facetrail.errors import ForbiddenError, InputError, PolicyError
from facetrail.rights import Rights
from facetrail.web.auth import Principal, require
from facetrail.web.deps import MAX_ID, Svc
from facetrail.web.searches import SHA256, read_upload

router = APIRouter()


def check_rights(principal: Principal) -> None:
    """Refuse (403) anyone who may not carry out erasures, opt-outs and retention, as the
    engine's ``Rights.check`` decides."""
    try:
        Rights.check(principal.actor)
    except PolicyError as exc:
        raise ForbiddenError(str(exc)) from exc


async def rights_admin(request: Request) -> Principal:
    principal = await require("admin")(request)
    check_rights(principal)
    return principal


RightsAdmin = Annotated[Principal, Depends(rights_admin)]


def read_photos(photos: list[UploadFile], limit: int) -> list[bytes]:
    """The uploaded photos, held together to the upload limit (413 over it)."""
    data: list[bytes] = []
    left = limit
    for photo in photos:
        data.append(read_upload(photo, left))
        left -= len(data[-1])
    return data


# -- erasure ---------------------------------------------------------------------------------
class ErasureIn(BaseModel):
    face_ids: list[Annotated[int, Field(ge=0, le=MAX_ID)]] | None = Field(
        default=None, min_length=1, description="Erase these faces.")
    image: str | None = Field(default=None, pattern=SHA256,
                              description="Erase this image (sha256) and all its faces; it is "
                              "never ingested again.")
    source: str | None = Field(default=None, min_length=1,
                               description="Remove this source: what only it reached is "
                               "erased, its appearances elsewhere go.")
    reason: str = Field(min_length=1, description="Why; kept with the erasure and audited.")
    dry_run: bool = Field(default=False, description="Report what would go; change nothing.")

    @model_validator(mode="after")
    def one_target(self) -> ErasureIn:
        given = [n for n in ("face_ids", "image", "source") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of face_ids, image or source")
        return self


@router.post("/erasures", tags=["rights"])
def erase(body: ErasureIn, who: RightsAdmin, service: Svc) -> dict[str, Any]:
    """Erase faces, an image or a whole source from the store, the indexes, the caches and
    kept results (where a candidate becomes a tombstone)."""
    engine, actor = service.engine, who.actor
    if body.face_ids is not None:
        report = engine.erase_faces(body.face_ids, reason=body.reason, actor=actor,
                                    dry_run=body.dry_run)
    elif body.image is not None:
        report = engine.erase_image(body.image, reason=body.reason, actor=actor,
                                    dry_run=body.dry_run)
    else:
        assert body.source is not None
        report = engine.remove_source(body.source, reason=body.reason, actor=actor,
                                      dry_run=body.dry_run)
    return {"erasure": serialize.erasure_report(report)}


@router.post("/erasures/photos", tags=["rights"])
def erase_by_photo(
    who: RightsAdmin,
    service: Svc,
    photos: Annotated[list[UploadFile], File(description="photos of the person")],
    reason: Annotated[str, Form(min_length=1)],
    threshold: Annotated[float | None, Form(ge=-1.0, le=1.0)] = None,
    dry_run: Annotated[bool, Form()] = False,
) -> dict[str, Any]:
    """Erase every indexed face matching the person in ``photos`` (the largest face of each)
    at ``threshold`` or above; faces just under it come back as ``borderline``, not erased."""
    data = read_photos(photos, service.settings.max_upload_bytes)
    report = service.engine.erase_photos(data, reason=reason, threshold=threshold,
                                         actor=who.actor, dry_run=dry_run)
    return {"erasure": serialize.erasure_report(report)}


@router.get("/erasures", tags=["rights"])
def list_erasures(
    who: RightsAdmin, service: Svc, limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> dict[str, Any]:
    """Past erasures, newest first: when, by whom, of what and why, with their counts."""
    rows = service.engine.erasures(limit=limit, actor=who.actor)
    return {"erasures": [serialize.erasure(e) for e in rows]}


class SourceRemovalIn(BaseModel):
    reason: str = Field(min_length=1)
    dry_run: bool = False


@router.delete("/sources/{name}", tags=["rights"])
def remove_source(
    name: str, who: RightsAdmin, service: Svc,
    reason: Annotated[str | None, Query(min_length=1)] = None,
    dry_run: bool = False,
    body: Annotated[SourceRemovalIn | None, Body()] = None,
) -> dict[str, Any]:
    """Remove a source and erase what only it reached (``reason`` in the query or a JSON
    body)."""
    if body is not None:
        reason, dry_run = body.reason, body.dry_run or dry_run
    if not reason:
        raise PolicyError("removing a source needs a reason (?reason=...)")
    report = service.engine.remove_source(name, reason=reason, actor=who.actor,
                                          dry_run=dry_run)
    return {"erasure": serialize.erasure_report(report)}


# -- opt-out ---------------------------------------------------------------------------------
@router.post("/optouts", tags=["rights"], status_code=201)
def add_optout(
    who: RightsAdmin,
    service: Svc,
    photos: Annotated[list[UploadFile], File(description="photos of the person")],
    reference: Annotated[str, Form(min_length=1, description="The request's reference.")],
    note: Annotated[str, Form()] = "",
    dry_run: Annotated[bool, Form()] = False,
) -> JSONResponse:
    """Keep templates of a person's face (never the photos), erase every face matching them
    and suppress matching faces from now on. 201 with the opt-out; 200 on a dry run, with
    ``optout`` null and what would be erased."""
    data = read_photos(photos, service.settings.max_upload_bytes)
    report = service.engine.add_optout(data, reference=reference, note=note, actor=who.actor,
                                       dry_run=dry_run)
    return JSONResponse(serialize.optout_report(report), status_code=200 if dry_run else 201)


@router.get("/optouts", tags=["rights"])
def list_optouts(who: RightsAdmin, service: Svc) -> dict[str, Any]:
    return {"optouts": [serialize.optout(o) for o in service.engine.optouts(actor=who.actor)]}


@router.delete("/optouts/{reference}", tags=["rights"])
def remove_optout(reference: str, who: RightsAdmin, service: Svc) -> dict[str, Any]:
    """Forget an opt-out's templates: matching faces are ingested and found again (what was
    erased stays erased)."""
    row = service.engine.remove_optout(reference, actor=who.actor)
    return {"optout": serialize.optout(row), "removed": True}


# -- retention -------------------------------------------------------------------------------
class SweepIn(BaseModel):
    as_of: str | None = Field(default=None, description="ISO date or UTC time; default: now.")
    dry_run: bool = False


def moment(value: str | None) -> datetime | None:
    """An ISO date (midnight UTC) or time (UTC unless it says otherwise)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"as_of must be a date like 2026-04-17 or a UTC time, not {value!r}"
                         ) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@router.post("/retention/sweep", tags=["rights"])
def sweep(
    who: RightsAdmin, service: Svc, body: Annotated[SweepIn | None, Body()] = None,
) -> dict[str, Any]:
    """Erase what is past its retention by ``as_of``: sources' appearances, probes' bytes,
    kept searches."""
    body = body or SweepIn()
    report = service.engine.sweep(as_of=moment(body.as_of), dry_run=body.dry_run,
                                  actor=who.actor)
    return {"sweep": serialize.sweep_report(report)}
