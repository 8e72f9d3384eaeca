"""Refused requests leave a trace, and token guessing is throttled.

- Every request answered 401 (``auth.failed``), 403 or 429 (``access.denied``), failed logins
  and CSRF refusals included, is one audit event with the actor (``-`` when unknown), the
  client address, the method, the path, the status and the error code. Bounded, so that a
  flood of refusals cannot flood the log: identical refusals (same action, address, actor,
  path, status and code) are written once per ``WINDOW_SECONDS``; the next one written after
  that carries ``repeated``, the number left out meanwhile. At most
  ``MAX_EVENTS_PER_WINDOW`` such events are written per window in all; refusals left out
  over that cap are counted, and the next event written carries ``others_left_out``.
- Failed logins and unknown bearer tokens are counted per client address: after
  ``login_failures`` of them in ``login_failure_window`` seconds (settings), every login or
  token from that address gets 429 with ``Retry-After`` until the oldest failure is out of the
  window, whether the token is right or not. A wrong token is counted and checked at once, so
  concurrent guesses learn "wrong" (401) at most ``login_failures`` times per window; a right
  one is admitted if the address is under its failures when it is looked up. Behind a reverse
  proxy every client has the proxy's address: the throttle then holds for all of them
  together.

The counts are kept in the store (``store/sql/rates.py``): every server process of a
deployment counts together, so ``serve --workers N`` does not make the limit N times looser.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from starlette.requests import Request

from facetrail.audit import AuditEvent
from facetrail.errors import FacetrailError, RateLimitError
from facetrail.store import Store

WINDOW_SECONDS = 60.0
MAX_EVENTS_PER_WINDOW = 120
DENIED = {401: "auth.failed", 403: "access.denied", 429: "access.denied"}
"""Status -> audit action of a refused request."""
CODES = {401: "unauthorized", 403: "forbidden", 429: "rate_limited"}
"""The code recorded when the refusal named none (``note``)."""


def client_of(request: Request) -> str:
    return request.client.host if request.client is not None else "-"


def note(request: Request, exc: FacetrailError, actor: str | None = None) -> None:
    """Remember why ``request`` is being refused, for its audit event."""
    request.state.denied_code = exc.code
    if actor is not None:
        request.state.denied_actor = actor


@dataclass
class _Seen:
    first: float
    left_out: int = 0


class DenialLog:
    """Writes the audit events of refused requests, bounded as the module says."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen: dict[tuple[str, ...], _Seen] = {}
        self._window_start = time.monotonic()
        self._written = 0
        self._over = 0  # refusals left out because the window's cap was reached
        self._lock = threading.Lock()

    def record(self, request: Request, status: int) -> bool:
        """Write the event of a request refused with ``status``, unless it is bounded out;
        True if it was written."""
        action = DENIED.get(status)
        if action is None:
            return False
        state = request.scope.get("state", {})
        code = str(state.get("denied_code") or CODES[status])
        principal = state.get("principal")
        actor = str(state.get("denied_actor") or getattr(principal, "name", None) or "-")
        ip = client_of(request)
        path = request.url.path[:200]
        key = (action, ip, actor, request.method, path, str(status), code)
        now = time.monotonic()
        with self._lock:
            if now - self._window_start >= WINDOW_SECONDS:
                self._window_start, self._written = now, 0
                self._seen = {k: s for k, s in self._seen.items()
                              if now - s.first < WINDOW_SECONDS or s.left_out}
            seen = self._seen.get(key)
            if seen is not None and now - seen.first < WINDOW_SECONDS:
                seen.left_out += 1
                return False
            if self._written >= MAX_EVENTS_PER_WINDOW:
                if seen is not None:
                    seen.left_out += 1
                else:  # not remembered one by one: the memory stays bounded too
                    self._over += 1
                return False
            repeated = seen.left_out if seen is not None else 0
            over, self._over = self._over, 0
            self._seen[key] = _Seen(now)
            self._written += 1
        details: dict[str, object] = {"ip": ip, "method": request.method, "path": path,
                                      "status": status, "code": code}
        if repeated:
            details["repeated"] = repeated
        if over:
            details["others_left_out"] = over
        self.store.append_audit(AuditEvent(actor=actor, action=action, details=details))
        return True


class LoginThrottle:
    """At most ``limit`` failed logins (or unknown tokens) per client address in any
    ``window`` seconds; then every login from it is refused until the window allows one.
    Counted in the store, so every server process of the deployment counts together."""

    KIND = "login_failure"

    def __init__(self, store: Store, limit: int, window: float) -> None:
        self.store = store
        self.limit = limit
        self.window = window

    def check(self, ip: str) -> None:
        """Raise ``RateLimitError`` if ``ip`` is over its failures (a read: every request with
        a bearer token asks it)."""
        self._refuse(self.store.rate_wait(self.KIND, ip, self.limit, self.window, time.time()))

    def failed(self, ip: str) -> None:
        """Count a failure of ``ip``; raise ``RateLimitError`` if it is one too many. Counted
        and checked at once (``take_rate``), so failures made at the same moment, by any
        number of threads and processes, are answered "wrong" (401) at most ``limit`` times
        in a window; the others get 429, which says nothing of the token."""
        self._refuse(self.store.take_rate(self.KIND, ip, self.limit, self.window, time.time()))

    def _refuse(self, wait: float | None) -> None:
        if wait is not None:
            raise RateLimitError.after(
                wait, f"more than {self.limit} failed logins from this address in "
                f"{self.window:g} s (FACETRAIL_LOGIN_FAILURES)")
