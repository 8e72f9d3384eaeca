"""The FastAPI application: the API under ``/api``, the pages at ``/``, JSON errors everywhere.

HTTP statuses are mapped from facetrail's exception tree here and nowhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from facetrail import __version__
from facetrail.errors import (
    AuthError,
    ConflictError,
    FacetrailError,
    ForbiddenError,
    InputError,
    NotFoundError,
    PolicyError,
    RateLimitError,
    StoreUnavailableError,
    UploadTooLargeError,
)
from facetrail.settings import Settings
from facetrail.web import api, docs, rights_pages, subject, ui
from facetrail.web.denials import note
from facetrail.web.guard import RequestGuard
from facetrail.web.service import Service

STATUS: tuple[tuple[type[FacetrailError], int], ...] = (
    # Most specific first.
    (AuthError, 401),
    (ForbiddenError, 403),
    (RateLimitError, 429),
    (UploadTooLargeError, 413),
    (NotFoundError, 404),
    (ConflictError, 409),
    (PolicyError, 422),
    (InputError, 422),
    (StoreUnavailableError, 503),
)
"""facetrail error class -> HTTP status; anything else is a 500."""


def status_of(exc: FacetrailError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def facetrail_response(exc: FacetrailError) -> JSONResponse:
    response = error_response(status_of(exc), exc.code, str(exc))
    if isinstance(exc, RateLimitError):
        response.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, AuthError):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def create_app(settings: Settings) -> FastAPI:
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="facetrail",
        version=__version__,
        description="Accountable face search. Every call except this documentation needs a "
        "token: `Authorization: Bearer <token>` (see `facetrail users add`).",
        docs_url=None,  # drawn by facetrail.web.docs: FastAPI's page loads Swagger UI from a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.service = service

    async def refuse(request: Request, exc: FacetrailError) -> Response:
        """A request refused before it was read: a page needing a login leads to the login
        page, as every page does; anything else is the API's JSON error."""
        note(request, exc)
        if isinstance(exc, AuthError) and not request.url.path.startswith("/api/"):
            return await ui.error_page(request, exc)
        return facetrail_response(exc)

    app.add_middleware(RequestGuard, max_upload_bytes=settings.max_upload_bytes, refuse=refuse,
                       on_refused=service.denials.record)
    app.include_router(api.router, prefix="/api")
    app.include_router(ui.router)
    app.include_router(subject.pages)
    app.include_router(rights_pages.router)
    app.include_router(docs.router)

    def is_page(request: Request) -> bool:
        """A browser's page, not the API (nor its schema): errors are pages there too."""
        path = request.url.path
        return not (path == "/api" or path.startswith("/api/") or path == "/openapi.json")

    @app.exception_handler(FacetrailError)
    async def facetrail_error(request: Request, exc: FacetrailError) -> Response:
        note(request, exc)
        if is_page(request):
            return await ui.error_page(request, exc)
        return facetrail_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        if is_page(request):
            return await ui.error_page(request, InputError(problems or "invalid request"))
        return error_response(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        if is_page(request) and exc.status_code == 404:
            return await ui.error_page(request, NotFoundError(f"no page at {request.url.path}"))
        return error_response(
            exc.status_code, codes.get(exc.status_code, f"http_{exc.status_code}"),
            str(exc.detail),
        )

    return app
