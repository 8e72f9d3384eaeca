"""FastAPI dependencies shared by the route modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

if TYPE_CHECKING:
    from facetrail.web.service import Service


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


Svc = Annotated["Service", Depends(service_of)]
