"""What every HTTP request passes before the application reads a byte of its body.

In this order:

1. a change (POST, PUT, PATCH, DELETE) must come from the server's own origin
   (``auth.check_origin``): 403 ``csrf_failed``;
2. a request with a body must carry valid credentials (``auth.identify``): 401, except the
   logins, whose body is the credential and is held to a small limit of its own;
3. a body declared (``Content-Length``) over its limit: 413 ``upload_too_large``.

The body is then counted as it arrives, chunked bodies included (they declare no length), and
the request is refused with 413 as soon as it goes over the limit. A refusal sent before the
body was read whole closes the connection, so that the server stops receiving it instead of
reading the rest to throw it away.

A response that sets no ``Cache-Control`` gets ``no-store``. Every request answered 401, 403
or 429, here or by the application, is then handed to ``on_refused``
(``denials.DenialLog.record``: its audit event).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facetrail.errors import FacetrailError, UploadTooLargeError
from facetrail.web.auth import check_origin, identify

PUBLIC_BODIES = frozenset({("POST", "/login"), ("POST", "/api/session")})
"""(method, path) of the requests whose body is read without credentials: the logins."""
LOGIN_BODY_LIMIT = 64 * 1024
"""Bytes of a login's body (a token, and the login form's CSRF token)."""
FORM_OVERHEAD = 64 * 1024
"""Bytes allowed above the upload limit for the multipart framing and the other form fields."""

Refusal = Callable[[Request, FacetrailError], Awaitable[Response]]
"""Turns an error into the response for the request (the app's one status mapping)."""
Refused = Callable[[Request, int], object]
"""Told of every request answered with a refusal status (401, 403, 429), once answered."""
REFUSALS = frozenset({401, 403, 429})
NO_STORE = (b"cache-control", b"no-store")
"""Every response that does not say otherwise (static assets do) is never cached: the API's
JSON, the pages, probe images and face crops hold case data or biometrics."""


class _OverLimit(Exception):
    """Raised into the application when its body goes over the limit; already answered."""


class RequestGuard:
    """ASGI middleware: origin, credentials and size checks before the body is read."""

    def __init__(self, app: ASGIApp, *, max_upload_bytes: int, refuse: Refusal,
                 on_refused: Refused) -> None:
        self.app = app
        self.max_upload_bytes = max_upload_bytes
        self.refuse = refuse
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        status = 0

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    message = {**message, "headers": [*headers, NO_STORE]}
            await send(message)

        try:
            await self._guard(request, scope, receive, sent)
        finally:
            if status in REFUSALS:
                await run_in_threadpool(self.on_refused, request, status)

    async def _guard(self, request: Request, scope: Scope, receive: Receive, send: Send
                     ) -> None:
        has_body = _has_body(request)
        public = (request.method, request.url.path) in PUBLIC_BODIES
        limit = LOGIN_BODY_LIMIT if public else self.max_upload_bytes + FORM_OVERHEAD
        try:
            check_origin(request)
            if has_body and not public:
                identify(request)
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise self._too_large(public, f"the request body of {declared} bytes")
        except FacetrailError as exc:
            await self._answer(request, exc, close=has_body, send=send)
            return

        received = 0
        started = False
        answered = False  # our 413 went out: whatever the application sends is dropped

        async def counted() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not answered:
                    if started:  # too late to answer: just stop the application
                        raise _OverLimit
                    answered = True
                    exc = self._too_large(public, "the request body")
                    await self._answer(request, exc, close=True, send=send)
                    raise _OverLimit
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _OverLimit:
            if not answered:
                raise

    def _too_large(self, public: bool, what: str) -> UploadTooLargeError:
        if public:
            return UploadTooLargeError(f"{what} is over {LOGIN_BODY_LIMIT} bytes, too large "
                                       "for a login")
        return UploadTooLargeError(
            f"{what} is over the upload limit of {self.max_upload_bytes} bytes "
            "(FACETRAIL_MAX_UPLOAD_BYTES)"
        )

    async def _answer(
        self, request: Request, exc: FacetrailError, *, close: bool, send: Send
    ) -> None:
        response = await self.refuse(request, exc)
        if close:
            response.headers["Connection"] = "close"
        await response(request.scope, _no_body, send)


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length", "0")
    return "transfer-encoding" in request.headers or length.strip() != "0"


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
