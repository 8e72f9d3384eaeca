"""A real ``facetrail serve`` in a subprocess on a free localhost port, for API and UI tests."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

import facetrail
from stores import copy_home, store_env, store_url_of

ROLE_USERS = {
    "admin": "admin",
    "analyst": "analyst",
    "analyst2": "analyst",
    "reviewer": "reviewer",
    "auditor": "auditor",
    "revoked": "analyst",
}
"""User name -> role of the accounts made in every server home; 'revoked' has no live token."""


LOGIN_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def login_form_token(browser: httpx.Client) -> str:
    """The login page's form token; its cookie stays in the client's jar, as in a browser's."""
    page = browser.get("/login")
    assert page.status_code == 200
    match = LOGIN_FIELD.search(page.text)
    assert match is not None, "the login form carries no csrf_token field"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_users(home: Path, store_url: str | None = None) -> dict[str, str]:
    """The accounts of ROLE_USERS in ``home`` (in ``store_url``, else its store in this test
    run); returns user name -> token."""
    tokens: dict[str, str] = {}
    with facetrail.open(home, store_url=store_url or store_url_of(home)) as engine:
        for name, role in ROLE_USERS.items():
            tokens[name] = engine.add_user(name, role, actor="tests")[1]
        engine.revoke_user("revoked", actor="tests")
    return tokens


@dataclass
class Server:
    home: Path
    tokens: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    serve_args: tuple[str, ...] = ()
    """More options of ``facetrail serve``, e.g. ('--workers', '2')."""
    ingest_workers: int = 1
    """Worker processes of the server's ingest jobs (1: the job's own thread)."""
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
        env.update(store_env(self.home))
        # Tests call many routes with wrong and revoked tokens from one address: the login
        # throttle is tested on its own (test_api_denials.py), with its default.
        env["FACETRAIL_LOGIN_FAILURES"] = "100000"
        env.update(self.env)
        self.log = self.home.parent / f"server-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "facetrail", "--home", str(self.home),
                 "--workers", str(self.ingest_workers),
                 "serve", "--port", str(self.port), *self.serve_args],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/openapi.json", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"server did not start:\n{self.log.read_text()}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def client(self, user: str | None = None, token: str | None = None) -> httpx.Client:
        """A client with the bearer token of ``user`` (or the given token, or none)."""
        headers = {}
        if user is not None:
            token = self.tokens[user]
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


def serve_copy(gallery_home: Path, where: Path, **env: str) -> Iterator[Server]:
    """A server over a private copy of the gallery home, with the ROLE_USERS accounts."""
    home = where / "home"
    copy_home(gallery_home, home)
    server = Server(home, add_users(home), env=env).start()
    try:
        yield server
    finally:
        server.stop()
