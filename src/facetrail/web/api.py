"""The JSON API, mounted under ``/api``. Every route names the roles it admits."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from facetrail.web.auth import Principal, end_session, require, start_session

router = APIRouter()

Anyone = Annotated[Principal, Depends(require())]


class Login(BaseModel):
    token: str


def principal_json(p: Principal) -> dict[str, Any]:
    return {"id": p.user_id, "name": p.name, "role": p.role}


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
