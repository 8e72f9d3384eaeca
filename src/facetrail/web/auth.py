"""Who is calling: bearer tokens for the API, session cookies with CSRF tokens for browsers.

A request is authenticated by ``Authorization: Bearer <token>`` or by the ``facetrail_session``
cookie. A cookie-authenticated request that changes something (POST, PUT, PATCH, DELETE) must
also carry the session's CSRF token, in the ``X-CSRF-Token`` header or a ``csrf_token`` form
field. Missing, unknown, revoked or expired credentials raise ``AuthError`` (401); a role
without the right raises ``ForbiddenError`` (403).

Two checks guard against other sites driving a browser, logged in or not (``CsrfError``):

- every change must come from the server's own origin: its ``Origin`` header, or without one
  its ``Referer``, names the server (``check_origin``). Browsers send ``Origin`` with every
  cross-origin change, so a change with neither header is not a cross-site browser request.
- the login form carries a pre-session token that ``GET /login`` puts both in the form and in a
  cookie (``set_login_cookie``); ``POST /login`` needs the two to match (a double submit).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from fastapi import Request, Response

from facetrail.accounts import ORG_ROLES, ROLES, Actor, secret_hash
from facetrail.audit import AuditEvent, utc_now
from facetrail.errors import AuthError, CsrfError, ForbiddenError
from facetrail.store import Credential, Store
from facetrail.web.denials import client_of

SESSION_COOKIE = "facetrail_session"
LOGIN_COOKIE = "facetrail_login"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Principal:
    user_id: int
    name: str
    role: str
    org: str = "default"
    org_id: int = 1

    @property
    def actor(self) -> Actor:
        """Who the engine records and scopes to: this user, for their organisation."""
        return Actor(self.name, self.user_id, org=self.org, org_id=self.org_id, role=self.role)


def _store(request: Request) -> Store:
    store: Store = request.app.state.service.engine.store
    return store


def _principal(credential: Credential) -> Principal:
    user = credential.user
    return Principal(user_id=user.id, name=user.name, role=user.role, org=user.org,
                     org_id=user.org_id)


def _session_credential(request: Request) -> Credential | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    return _store(request).session(secret_hash(session_id), utc_now())


def identify(request: Request) -> Credential:
    """The credential a request carries, a bearer token or a session cookie (no CSRF check);
    reads headers and cookies only, never the body."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("use 'Authorization: Bearer <token>'")
        return _token_credential(request, token)
    credential = _session_credential(request)
    if credential is None:
        if request.cookies.get(SESSION_COOKIE):
            raise AuthError("the session has ended or expired; log in again")
        raise AuthError("a token is required: 'Authorization: Bearer <token>' or log in")
    return credential


async def authenticate(request: Request) -> Principal:
    """The caller, from a bearer token or a session cookie (checking CSRF for changes)."""
    credential = identify(request)
    if request.headers.get("authorization") is not None:
        return _principal(credential)
    if request.method in UNSAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and _is_form(request):
            value = (await request.form()).get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
        if sent is None or credential.csrf is None or not _same(sent, credential.csrf):
            raise CsrfError("missing or wrong CSRF token")
    request.state.csrf_token = credential.csrf
    return _principal(credential)


def _same(sent: str, known: str) -> bool:
    return hmac.compare_digest(sent.encode(), known.encode())


def own_origin(request: Request) -> str:
    """The server's origin as the browser addressed it: ``scheme://host[:port]``."""
    return f"{request.url.scheme}://{request.url.netloc}".lower()


def check_origin(request: Request) -> None:
    """Refuse a change sent by a page of another origin (``Origin: null`` included)."""
    if request.method not in UNSAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return  # not a cross-site browser request; CSRF tokens still apply
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin.lower() != own_origin(request):
        raise CsrfError(
            f"a change sent from another origin ({origin}) is refused; use facetrail's own "
            "pages or a client without a browser"
        )


def new_login_token() -> str:
    """A pre-session token for one login form."""
    return secrets.token_urlsafe(32)


def set_login_cookie(request: Request, response: Response, token: str) -> None:
    """Keep the login form's token in a cookie that only the login route receives."""
    response.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="strict",
        secure=request.url.scheme == "https", path="/login",
    )


def check_login_form(request: Request, sent: str) -> None:
    """The login form must carry the token its page set as a cookie (a double submit)."""
    known = request.cookies.get(LOGIN_COOKIE)
    if not sent or not known or not _same(sent, known):
        raise CsrfError("the login form has expired or was not facetrail's; log in again")


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


def require(*roles: str) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency admitting the given roles (when none are given: every role that
    acts within an organisation; oversight is named where it is admitted)."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")
    admitted = roles or ORG_ROLES

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if principal.role not in admitted:
            request.state.denied_actor = principal.name  # for the refusal's audit event
            raise ForbiddenError(
                f"the {principal.role} role may not do this; it needs: {', '.join(admitted)}"
            )
        request.state.principal = principal
        return principal

    return dependency


def _token_credential(request: Request, token: str) -> Credential:
    """The credential of a token, counting a wrong one against the client's address
    (``denials.LoginThrottle``: over its failures, even a right one is refused, 429)."""
    throttle = request.app.state.service.logins
    ip = client_of(request)
    throttle.check(ip)
    credential = _store(request).credential(secret_hash(token.strip()))
    if credential is None:
        throttle.failed(ip)
        raise AuthError("unknown or revoked token")
    return credential


def start_session(request: Request, response: Response, token: str) -> tuple[Principal, str]:
    """Log in with a token: sets the session cookie; returns the user and the CSRF token."""
    store = _store(request)
    credential = _token_credential(request, token)
    hours = request.app.state.service.settings.session_hours
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(hours=hours)
    store.add_session(
        secret_hash(session_id), credential.token_id, csrf,
        expires.isoformat(timespec="microseconds").replace("+00:00", "Z"),
    )
    response.set_cookie(
        SESSION_COOKIE, session_id, max_age=int(hours * 3600), httponly=True,
        samesite="strict", secure=request.url.scheme == "https", path="/",
    )
    principal = _principal(credential)
    store.append_audit(
        AuditEvent(actor=principal.name, action="login", org=principal.org,
                   details={"role": principal.role, "via": "session"})
    )
    request.state.csrf_token = csrf
    return principal, csrf


def end_session(request: Request, response: Response) -> None:
    """Log out: the session is ended in the store and the cookie cleared."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        store = _store(request)
        credential = store.session(secret_hash(session_id), utc_now())
        store.end_session(secret_hash(session_id))
        if credential is not None:
            store.append_audit(AuditEvent(actor=credential.user.name, action="logout",
                                          org=credential.user.org))
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def csrf_token(request: Request) -> str:
    """The current session's CSRF token, for forms in templates ('' without a session)."""
    known = getattr(request.state, "csrf_token", None)
    if known:
        return str(known)
    credential = _session_credential(request)
    return credential.csrf or "" if credential is not None else ""
