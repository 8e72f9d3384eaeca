"""Cross-site requests: logins and cookie-authenticated changes coming from another origin.

A browser sends ``Origin`` with every cross-origin POST, PUT, PATCH or DELETE (``null`` from an
opaque origin), so the server refuses a change whose Origin, or else Referer, is not its own.
The login form also carries a pre-session token that only a page of the server can know.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from webserver import Server, login_form_token


def foreign_origins(server: Server) -> list[str]:
    _, _, port = server.url.rpartition(":")
    return ["http://evil.example", "null", f"http://127.0.0.1:{int(port) + 1}",
            f"https://127.0.0.1:{port}", f"http://localhost:{port}"]


def audit_length(server: Server) -> int:
    """Audit events of things done: refusals are events too (``auth.failed``,
    ``access.denied``), but nothing was done by them."""
    with server.client("auditor") as auditor:
        events = auditor.get("/api/audit", params={"limit": 10_000}).json()["events"]
    return sum(e["action"] not in ("auth.failed", "access.denied") for e in events)


def test_the_login_form_needs_the_token_its_page_set(api_server: Server) -> None:
    token = api_server.tokens["auditor"]
    with httpx.Client(base_url=api_server.url, timeout=60) as browser:
        # A form posted by another site's page: it could not read the login page's token.
        forged = browser.post("/login", data={"token": token})
        assert forged.status_code == 403 and "was not facetrail&#39;s" in forged.text
        assert "facetrail_session" not in forged.cookies
        login_form_token(browser)
        wrong = browser.post("/login", data={"token": token, "csrf_token": "guessed"})
        assert wrong.status_code == 403 and "facetrail_session" not in wrong.cookies
        form = login_form_token(browser)
        ok = browser.post("/login", data={"token": token, "csrf_token": form})
        assert ok.status_code == 303 and "facetrail_session" in ok.cookies


def test_logins_from_another_origin_are_refused(api_server: Server) -> None:
    token = api_server.tokens["auditor"]
    for origin in foreign_origins(api_server):
        with httpx.Client(base_url=api_server.url, timeout=60) as browser:
            form = login_form_token(browser)
            by_form = browser.post("/login", data={"token": token, "csrf_token": form},
                                   headers={"Origin": origin})
            assert by_form.status_code == 403, origin
            assert by_form.json()["error"]["code"] == "csrf_failed"
            by_json = browser.post("/api/session", json={"token": token},
                                   headers={"Origin": origin})
            assert by_json.status_code == 403, origin
            assert "facetrail_session" not in browser.cookies
    with httpx.Client(base_url=api_server.url, timeout=60) as browser:
        form = login_form_token(browser)
        elsewhere = {"Referer": "http://evil.example/login.html"}  # a browser without Origin
        assert browser.post("/login", data={"token": token, "csrf_token": form},
                            headers=elsewhere).status_code == 403
        assert browser.post("/api/session", json={"token": token},
                            headers=elsewhere).status_code == 403
        own = browser.post("/login", data={"token": token, "csrf_token": form},
                           headers={"Origin": api_server.url,
                                    "Referer": api_server.url + "/login"})
        assert own.status_code == 303 and "facetrail_session" in own.cookies


@pytest.mark.parametrize("method,path,kwargs", [
    ("POST", "/logout", {}),
    ("DELETE", "/api/session", {}),
    ("POST", "/api/users", {"json": {"name": "csrf-victim", "role": "auditor"}}),
    ("PATCH", "/api/sources/people", {"json": {"retention_days": 30}}),
])
def test_cookie_changes_from_another_origin_are_refused_even_with_the_csrf_token(
    api_server: Server, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    with httpx.Client(base_url=api_server.url, timeout=60) as browser:
        login = browser.post("/api/session", json={"token": api_server.tokens["admin"]})
        csrf = login.json()["csrf_token"]
        headers = {"X-CSRF-Token": csrf}
        before = audit_length(api_server)
        for origin in foreign_origins(api_server):
            refused = browser.request(method, path, headers={**headers, "Origin": origin},
                                      **kwargs)
            assert refused.status_code == 403, origin
            assert refused.json()["error"]["code"] == "csrf_failed"
        refused = browser.request(method, path, headers={
            **headers, "Referer": "http://evil.example/"}, **kwargs)
        assert refused.status_code == 403
        assert browser.get("/api/me").status_code == 200  # still logged in
        assert audit_length(api_server) == before  # and nothing was done
        done = browser.request(method, path, headers={**headers, "Origin": api_server.url},
                               **kwargs)
        assert done.status_code < 400, done.text
