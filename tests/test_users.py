"""Accounts: tokens shown once and kept hashed, revoked and rotated, sessions with CSRF."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from conftest import run_cli
from facetrail.store import open_store
from stores import postgres_mode, store_url_of
from webserver import Server


def test_users_add_prints_a_token_once_and_keeps_only_its_hash(api_server: Server) -> None:
    out = run_cli(api_server.home, "users", "add", "dana", "--role", "reviewer").stdout
    token = out.strip().splitlines()[-1]
    assert token.startswith("ft_") and len(token) > 40
    store = open_store(store_url_of(api_server.home))
    try:
        held = store.credential(hashlib.sha256(token.encode()).hexdigest())
        assert held is not None and held.user.name == "dana"
        assert store.get_user("dana").active_tokens == 1
    finally:
        store.close()
    listing = run_cli(api_server.home, "users", "list").stdout
    assert "dana" in listing and token not in listing

    with api_server.client(token=token) as client:
        me = client.get("/api/me")
    assert me.status_code == 200
    assert me.json()["user"] | {"id": 0} == {"id": 0, "name": "dana", "role": "reviewer"}


def test_the_database_file_never_holds_a_token(api_server: Server) -> None:
    if postgres_mode():
        pytest.skip("a PostgreSQL store has no file of its own to read")
    out = run_cli(api_server.home, "users", "add", "fran", "--role", "auditor").stdout
    token = out.strip().splitlines()[-1]
    assert token.startswith("ft_")
    # The server keeps the store open, so the newest rows may still be in the WAL file.
    files = list(api_server.home.glob("facetrail.db*"))
    assert api_server.home / "facetrail.db" in files
    assert not [f for f in files if token.encode() in f.read_bytes()]


def test_rotate_and_revoke(api_server: Server) -> None:
    first = run_cli(api_server.home, "users", "add", "erin", "--role", "auditor").stdout
    old = first.strip().splitlines()[-1]
    new = run_cli(api_server.home, "users", "rotate", "erin").stdout.strip().splitlines()[-1]
    assert new != old
    with api_server.client(token=old) as client:
        response = client.get("/api/me")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    with api_server.client(token=new) as client:
        assert client.get("/api/me").status_code == 200
    revoked = run_cli(api_server.home, "users", "revoke", "erin").stdout
    assert "1 token(s) of erin revoked" in revoked
    with api_server.client(token=new) as client:
        assert client.get("/api/me").status_code == 401
    with api_server.client("auditor") as auditor:
        events = auditor.get("/api/audit", params={"action": None}).json()["events"]
    actions = [
        (e["action"], e["details"]["user"]) for e in events
        if e["action"].startswith("user.") and e["details"].get("user") == "erin"
    ]
    assert actions == [("user.add", "erin"), ("user.rotate", "erin"), ("user.revoke", "erin")]


def test_unknown_role_and_duplicate_name_are_refused(api_server: Server) -> None:
    bad = run_cli(api_server.home, "users", "add", "x", "--role", "root", check=False)
    assert bad.returncode != 0 and "root" in bad.stderr
    run_cli(api_server.home, "users", "add", "frank", "--role", "analyst")
    again = run_cli(api_server.home, "users", "add", "frank", "--role", "admin", check=False)
    assert again.returncode == 2 and "error [conflict]" in again.stderr


def test_session_cookie_needs_csrf_for_changes(api_server: Server) -> None:
    token = run_cli(api_server.home, "users", "add", "gail", "--role", "analyst").stdout
    token = token.strip().splitlines()[-1]
    with httpx.Client(base_url=api_server.url, timeout=60) as browser:
        assert browser.post("/api/session", json={"token": "ft_wrong"}).status_code == 401
        login = browser.post("/api/session", json={"token": token})
        assert login.status_code == 200
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert "facetrail_session=" in cookie and token.lower() not in cookie
        csrf = login.json()["csrf_token"]
        assert browser.get("/api/me").json()["user"]["name"] == "gail"

        refused = browser.delete("/api/session")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "csrf_failed"
        wrong = browser.delete("/api/session", headers={"X-CSRF-Token": csrf + "x"})
        assert wrong.status_code == 403
        assert browser.delete("/api/session", headers={"X-CSRF-Token": csrf}).status_code == 200
        # The cookie is gone from the jar, and the session is ended in the store too.
        assert browser.get("/api/me").status_code == 401
    with httpx.Client(base_url=api_server.url, timeout=60) as forger:
        forger.cookies.set("facetrail_session", "anything")
        ended = forger.get("/api/me")
        assert ended.status_code == 401
        assert ended.json()["error"]["code"] == "unauthorized"


def test_a_revoked_token_ends_its_sessions(api_server: Server) -> None:
    token = run_cli(api_server.home, "users", "add", "hal", "--role", "auditor").stdout
    token = token.strip().splitlines()[-1]
    with httpx.Client(base_url=api_server.url, timeout=60) as browser:
        assert browser.post("/api/session", json={"token": token}).status_code == 200
        assert browser.get("/api/me").status_code == 200
        run_cli(api_server.home, "users", "revoke", "hal")
        assert browser.get("/api/me").status_code == 401
