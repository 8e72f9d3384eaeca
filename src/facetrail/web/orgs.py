"""Organisations and the sharing of sources over HTTP: the verbs of ``facetrail orgs`` and
``facetrail sources share|unshare``, for admins.

    GET    /orgs                            any admin: the organisations (whom to share with)
    POST   /orgs                            an admin of 'default': the deployment's own
    GET    /sources/{name}/shares           an admin of the source's owner
    POST   /sources/{name}/shares           an admin of the source's owner
    DELETE /sources/{name}/shares/{org}     an admin of the source's owner

Only the owner shares a source, under the sharing's own lawful basis and purpose; the engine
audits each sharing in both organisations' logs. A source of another organisation answers 404
and a source shared with the admin's organisation 403, as the other source routes do.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from facetrail import serialize
from facetrail.errors import ForbiddenError
from facetrail.orgs import DEFAULT_ORG_ID
from facetrail.web.auth import Principal, require
from facetrail.web.deps import Svc

router = APIRouter()

Admin = Annotated[Principal, Depends(require("admin"))]


async def deployment_admin(request: Request) -> Principal:
    """An admin of the 'default' organisation (403 for other admins)."""
    principal = await require("admin")(request)
    if principal.org_id != DEFAULT_ORG_ID:
        raise ForbiddenError("organisations are added by the deployment: an admin of the "
                             "'default' organisation, or the operator on the command line")
    return principal


DeploymentAdmin = Annotated[Principal, Depends(deployment_admin)]


class OrgIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class ShareIn(BaseModel):
    org: str = Field(min_length=1, max_length=64,
                     description="The organisation to share the source with.")
    lawful_basis: str = Field(min_length=1, max_length=1000,
                              description="The sharing's own lawful basis.")
    purpose: str = Field(min_length=1, max_length=1000,
                         description="What the organisation may search it for.")


@router.get("/orgs", tags=["orgs"])
def list_orgs(who: Admin, service: Svc) -> dict[str, Any]:
    """The deployment's organisations, to share a source with."""
    return {"orgs": [serialize.org(o) for o in service.engine.orgs()]}


@router.post("/orgs", tags=["orgs"], status_code=201)
def add_org(body: OrgIn, who: DeploymentAdmin, service: Svc) -> dict[str, Any]:
    """Add an organisation (an agency of the deployment); its admins are then added with
    ``facetrail users add NAME --role admin --org ORG``."""
    return {"org": serialize.org(service.engine.add_org(body.name, actor=who.name))}


@router.get("/sources/{name}/shares", tags=["sources"])
def list_shares(name: str, who: Admin, service: Svc) -> dict[str, Any]:
    """The organisations an owned source is shared with."""
    service.engine.source(name, actor=who.actor, owned=True)
    return {"shares": [serialize.share(s) for s in service.engine.shares(name)]}


@router.post("/sources/{name}/shares", tags=["sources"], status_code=201)
def share_source(name: str, body: ShareIn, who: Admin, service: Svc) -> dict[str, Any]:
    """Let another organisation search an owned source."""
    service.engine.source(name, actor=who.actor, owned=True)
    share = service.engine.share_source(name, body.org, lawful_basis=body.lawful_basis,
                                        purpose=body.purpose, actor=who.name)
    return {"share": serialize.share(share)}


@router.delete("/sources/{name}/shares/{org}", tags=["sources"])
def unshare_source(name: str, org: str, who: Admin, service: Svc) -> dict[str, Any]:
    """Stop sharing an owned source with an organisation."""
    service.engine.source(name, actor=who.actor, owned=True)
    service.engine.unshare_source(name, org, actor=who.name)
    return {"source": name, "unshared": org}
