"""The JSON API, mounted under ``/api``. Every route names the roles it admits.

    session   POST/DELETE /session, GET /me                      any role
    users     /users...                                          admin
    sources   /sources..., jobs /jobs...                         admin
    orgs      /orgs, /sources/{name}/shares...                   admin (POST /orgs: of 'default')
    search    /probes..., /searches..., /cases/{case}/report     analyst (reviewer reads)
    review    /reviews/queue, /searches/{id}/reviews             reviewer
    media     /images/..., /faces/{id}/crop, /probes/{sha}/...   analyst, reviewer
              (/faces/{id}/crop also the admin who erases)
    audit     /audit, /audit/export, /audit/verify               auditor
    rights    /erasures..., /optouts..., /retention/sweep,        admin of 'default'
              DELETE /sources/{name}, /subject-access
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from facetrail.accounts import ROLES
from facetrail.engine import Facetrail
from facetrail.store import AuditQuery, UserRow
from facetrail.web import jobs, media, orgs, rights, searches, subject
from facetrail.web.auth import Principal, end_session, require, start_session
from facetrail.web.deps import MAX_ID

router = APIRouter()

Anyone = Annotated[Principal, Depends(require(*ROLES))]
Admin = Annotated[Principal, Depends(require("admin"))]
Auditor = Annotated[Principal, Depends(require("auditor", "oversight"))]


def engine_of(request: Request) -> Facetrail:
    engine: Facetrail = request.app.state.service.engine
    return engine


Engine = Annotated[Facetrail, Depends(engine_of)]


def principal_json(p: Principal) -> dict[str, Any]:
    return {"id": p.user_id, "name": p.name, "role": p.role}


def user_json(u: UserRow) -> dict[str, Any]:
    return {"id": u.id, "name": u.name, "role": u.role, "org": u.org,
            "active_tokens": u.active_tokens, "created_at": u.created_at,
            "created_by": u.created_by}


# -- session ---------------------------------------------------------------------------------
class Login(BaseModel):
    token: str


@router.post("/session", tags=["session"])
def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
    """Open a browser session with a token: sets the HttpOnly session cookie."""
    principal, csrf = start_session(request, response, body.token)
    return {"user": principal_json(principal), "csrf_token": csrf}


@router.delete("/session", tags=["session"])
def logout(request: Request, response: Response, who: Anyone) -> dict[str, Any]:
    end_session(request, response)
    return {"ended": True}


@router.get("/me", tags=["session"])
def me(who: Anyone) -> dict[str, Any]:
    return {"user": principal_json(who)}


# -- users -----------------------------------------------------------------------------------
class NewUser(BaseModel):
    name: str
    role: str


@router.get("/users", tags=["users"])
def list_users(who: Admin, engine: Engine) -> dict[str, Any]:
    return {"users": [user_json(u) for u in engine.users() if u.org_id == who.org_id],
            "roles": list(ROLES)}


@router.post("/users", tags=["users"], status_code=201)
def add_user(body: NewUser, who: Admin, engine: Engine) -> dict[str, Any]:
    """Add a user. The response holds their token; it is never shown again."""
    user, token = engine.add_user(body.name, body.role, actor=who.name, org=who.org)
    return {"user": user_json(user), "token": token}


@router.post("/users/{name}/revoke", tags=["users"])
def revoke_user(name: str, who: Admin, engine: Engine) -> dict[str, Any]:
    engine.user(name, actor=who.actor)
    return {"user": name, "tokens_revoked": engine.revoke_user(name, actor=who.name)}


@router.post("/users/{name}/rotate", tags=["users"])
def rotate_user(name: str, who: Admin, engine: Engine) -> dict[str, Any]:
    """Revoke a user's tokens and issue a new one, shown once."""
    engine.user(name, actor=who.actor)
    return {"user": name, "token": engine.rotate_token(name, actor=who.name)}


# -- audit -----------------------------------------------------------------------------------
def audit_query(
    actor: str | None = None,
    case: str | None = None,
    action: str | None = None,
    since: Annotated[str | None, Query(description="UTC date or time, inclusive")] = None,
    until: Annotated[str | None, Query(description="UTC date or time, exclusive")] = None,
) -> AuditQuery:
    return AuditQuery(actor=actor or None, case_ref=case or None, action=action or None,
                      since=since or None, until=until or None)


Filters = Annotated[AuditQuery, Depends(audit_query)]


@router.get("/audit", tags=["audit"])
def audit_events(
    who: Auditor, engine: Engine, filters: Filters,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """Audit events in order, filtered; page with ``after_id`` = the last id received."""
    rows = engine.audit_events(replace(filters, after_id=after_id, limit=limit),
                               actor=who.actor)
    return {"events": [r.to_json() for r in rows],
            "next_after_id": rows[-1].id if len(rows) == limit else None}


@router.get("/audit/export", tags=["audit"])
def audit_export(who: Auditor, engine: Engine, filters: Filters) -> StreamingResponse:
    """The filtered events as JSON Lines, one event with its hashes per line."""
    rows = engine.audit_events(filters, actor=who.actor)

    def lines() -> Iterator[bytes]:
        for r in rows:
            yield (json.dumps(r.to_json(), ensure_ascii=False) + "\n").encode("utf-8")

    return StreamingResponse(
        lines(), media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="facetrail-audit.jsonl"'},
    )


@router.get("/audit/verify", tags=["audit"])
def audit_verify(who: Auditor, engine: Engine) -> dict[str, Any]:
    """Walk the whole hash chain; ``ok`` is false and the first bad event is named if broken."""
    return engine.verify_audit().to_json()


router.include_router(searches.router)
router.include_router(media.router)
router.include_router(jobs.router)
router.include_router(orgs.router)
router.include_router(subject.router)
router.include_router(rights.router)
