"""FastAPI dependencies shared by the route modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Path, Request

if TYPE_CHECKING:
    from facetrail.web.service import Service


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


Svc = Annotated["Service", Depends(service_of)]

MAX_ID = 2**63 - 1
"""The largest id the stores hold (a signed 64-bit integer): a larger one is refused with
422 ``invalid_request``, never passed to the database."""
Id = Annotated[int, Path(ge=0, le=MAX_ID)]
"""An id (of a face, a search, a job) or an index in a URL path."""
MAX_DAYS = 100 * 366
"""The longest retention period, in days (dates stay within the calendar)."""
