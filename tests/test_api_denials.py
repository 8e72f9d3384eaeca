"""Failures are events (``facetrail.web.denials``): refused requests leave one bounded audit
event each, token guessing is throttled per client address, and a user name cannot carry
control or direction-override characters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import facetrail
from facetrail.errors import PolicyError
from webserver import Server, add_users, login_form_token


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server with the login throttle's default (10 failures a minute per address)."""
    home = tmp_path / "home"
    server = Server(home, add_users(home), env={"FACETRAIL_LOGIN_FAILURES": "10"}).start()
    try:
        yield server
    finally:
        server.stop()


def events(server: Server, *actions: str, at_least: int = 0) -> list[dict[str, Any]]:
    """The audit events of ``actions``; waits (up to 10 s) for ``at_least`` of them, since a
    refusal's event is written once the response has been sent."""
    deadline = time.monotonic() + 10
    while True:
        with facetrail.open(server.home) as engine:
            found = [r.to_json() for r in engine.audit_events() if r.event.action in actions]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_wrong_tokens_are_throttled_per_address(server: Server) -> None:
    started = time.monotonic()
    statuses = []
    with server.client(token="ft_" + "x" * 43) as guesser:
        for _ in range(40):
            statuses.append(guesser.get("/api/sources").status_code)
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}, statuses
    assert time.monotonic() - started < 30
    # A login through the form, or with the right token, is refused as well meanwhile.
    with server.client("admin") as admin:
        refused = admin.get("/api/sources")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "rate_limited"
    with httpx.Client(base_url=server.url, headers={"Origin": server.url}) as browser:
        form = login_form_token(browser)
        page = browser.post("/login", data={"token": server.tokens["admin"],
                                            "csrf_token": form})
        assert page.status_code == 429 and "Retry-After" in page.headers
    with httpx.Client(base_url=server.url) as api:
        assert api.post("/api/session", json={"token": "wrong"}).status_code == 429
    # 10 wrong tokens, then the refusals: one event each kind, bounded, with the address.
    failed = events(server, "auth.failed", at_least=1)
    assert len(failed) == 1, failed
    assert failed[0]["details"] == {"ip": "127.0.0.1", "method": "GET", "path": "/api/sources",
                                    "status": 401, "code": "unauthorized"}
    denied = events(server, "access.denied", at_least=3)
    assert {(e["details"]["path"], e["details"]["code"]) for e in denied} == {
        ("/api/sources", "rate_limited"), ("/login", "rate_limited"),
        ("/api/session", "rate_limited")}


def test_refusals_are_audited_once_per_kind_and_minute(server: Server) -> None:
    with server.client("analyst") as analyst:
        for _ in range(5):
            assert analyst.get("/api/users").status_code == 403
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/api/sources").status_code == 401
    with httpx.Client(base_url=server.url, headers={"Origin": "https://evil.example"}) as evil:
        assert evil.post("/login", data={"token": "x", "csrf_token": "y"}).status_code == 403
    with httpx.Client(base_url=server.url, headers={"Origin": server.url}) as browser:
        form = login_form_token(browser)
        bad = browser.post("/login", data={"token": "ft_wrong", "csrf_token": form})
        assert bad.status_code == 401
    denied = [(e["actor"], e["action"], e["details"]["path"], e["details"]["status"],
               e["details"]["code"])
              for e in events(server, "access.denied", "auth.failed", at_least=4)]
    assert denied == [
        ("analyst", "access.denied", "/api/users", 403, "forbidden"),
        ("-", "auth.failed", "/api/sources", 401, "unauthorized"),
        ("-", "access.denied", "/login", 403, "csrf_failed"),
        ("-", "auth.failed", "/login", 401, "unauthorized"),
    ]
    with facetrail.open(server.home) as engine:
        assert engine.verify_audit().ok


@pytest.mark.parametrize("name", [
    "eve\nadmin", "admin\u202egnp", "a b", "\x1b[31mred", "", " ", "x" * 65, "_x", "zero\u200bw",
])
def test_user_names_are_restricted(tmp_path: Path, name: str) -> None:
    with facetrail.open(tmp_path / "home") as engine, pytest.raises(PolicyError):
        engine.add_user(name, "analyst", actor="tests")


def test_ordinary_user_names_are_taken(tmp_path: Path) -> None:
    with facetrail.open(tmp_path / "home") as engine:
        for name in ("ann", "Ann.Lee", "j-doe_2", "ops@example.org", "José", "李雷"):
            assert engine.add_user(name, "analyst", actor="tests")[0].name == name
