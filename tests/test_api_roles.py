"""Every API endpoint against every role, and without a token, with a bad one, a revoked one.

A role with the right gets exactly the endpoint's success status; a role without it gets 403;
no token, a wrong token and a revoked token get 401. A test also checks that this table lists
every route of the API, so a new route cannot go untested.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from conftest import PEOPLE
from facetrail.store import open_store
from stores import store_url_of
from webserver import Server

PROBE = PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg"
ROLES = ("admin", "analyst", "reviewer", "auditor")
CALLERS = (*ROLES, "none", "bad", "revoked")
READERS = {"analyst", "reviewer"}
_names = itertools.count()


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    allowed: frozenset[str]
    ok: int = 200
    body: Callable[[dict[str, Any]], dict[str, Any]] | None = field(default=None, compare=False)

    def kwargs(self, ctx: dict[str, Any]) -> dict[str, Any]:
        return self.body(ctx) if self.body is not None else {}


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


def upload(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"files": {"file": (PROBE.name, PROBE.read_bytes())}}


def fresh_job(ctx: dict[str, Any]) -> int:
    """A queued job the runner does not know of, so cancelling it is deterministic."""
    store = open_store(store_url_of(ctx["home"]))
    try:
        return store.add_job(store.get_source("people").id, [], "tests").id
    finally:
        store.close()


def fresh_optout(ctx: dict[str, Any]) -> str:
    """An opt-out made through the store, whose random template matches nobody."""
    store = open_store(store_url_of(ctx["home"]))
    try:
        model_id = store.models()[0][0]
        dim = len(next(iter(store.embeddings([ctx["face_id"]]).values())))
        vector = np.random.default_rng(0).normal(size=dim).astype(np.float32)
        reference = unique("REF-")
        store.add_optout(reference, "role table", 1, "tests", 1,
                         [(model_id, "0" * 64, vector / np.linalg.norm(vector))])
        return reference
    finally:
        store.close()


def fresh_org(ctx: dict[str, Any], shared: bool = False) -> str:
    """A new organisation, with 'people' shared with it if ``shared``."""
    store = open_store(store_url_of(ctx["home"]))
    try:
        org = store.add_org(unique("org"), "tests")
        if shared:
            store.share_source(store.get_source("people").id, org.id, "tests", "role table",
                               "tests")
        return org.name
    finally:
        store.close()


def photos(ctx: dict[str, Any]) -> dict[str, Any]:
    return {"files": [("photos", (PROBE.name, PROBE.read_bytes()))]}


def table() -> list[Call]:
    admin, every, readers = frozenset({"admin"}), frozenset(ROLES), frozenset(READERS)
    analyst, reviewer, auditor = (frozenset({r}) for r in ("analyst", "reviewer", "auditor"))
    return [
        Call("GET", "/api/me", every),
        Call("DELETE", "/api/session", every),
        Call("GET", "/api/users", admin),
        Call("POST", "/api/users", admin, 201,
             lambda c: {"json": {"name": unique("u"), "role": "auditor"}}),
        Call("POST", "/api/users/{name}/revoke", admin),
        Call("POST", "/api/users/{name}/rotate", admin),
        Call("GET", "/api/sources", admin),
        Call("POST", "/api/sources", admin, 201, lambda c: {"json": {
            "name": unique("s"), "kind": "folder", "uri": str(PEOPLE),
            "lawful_basis": "tests", "purpose": "tests", "retention_days": 10}}),
        Call("PATCH", "/api/sources/{name}", admin, 200,
             lambda c: {"json": {"retention_days": 40}}),
        Call("GET", "/api/sources/{name}/errors", admin),
        Call("GET", "/api/orgs", admin),
        Call("POST", "/api/orgs", admin, 201, lambda c: {"json": {"name": unique("org")}}),
        Call("GET", "/api/sources/{name}/shares", admin),
        Call("POST", "/api/sources/{name}/shares", admin, 201, lambda c: {"json": {
            "org": fresh_org(c), "lawful_basis": "tests", "purpose": "role table"}}),
        Call("DELETE", "/api/sources/{name}/shares/{org}", admin),
        Call("POST", "/api/jobs", admin, 202,
             lambda c: {"json": {"source": "people", "paths": [str(PEOPLE / "Ashanti")]}}),
        Call("GET", "/api/jobs", admin),
        Call("GET", "/api/jobs/{job_id}", admin),
        Call("POST", "/api/jobs/{job_id}/cancel", admin),
        Call("POST", "/api/probes", analyst, 201, upload),
        Call("GET", "/api/probes/{sha256}", readers),
        Call("GET", "/api/probes/{sha256}/image", readers),
        Call("GET", "/api/probes/{sha256}/faces/{index}/crop", readers),
        Call("POST", "/api/searches", analyst, 201, lambda c: {"json": {
            "probe_sha256": c["probe"], "case_ref": "ROLES", "purpose": "role table"}}),
        Call("POST", "/api/searches/upload", analyst, 201,
             lambda c: {**upload(c), "data": {"case_ref": "ROLES", "purpose": "role table"}}),
        Call("GET", "/api/searches", readers),
        Call("GET", "/api/searches/{search_id}", readers),
        Call("POST", "/api/searches/{search_id}/reviews", reviewer, 201, lambda c: {"json": {
            "face_id": c["face_id"], "decision": "confirm", "note": "role table"}}),
        Call("GET", "/api/reviews/queue", reviewer),
        Call("GET", "/api/cases/{case_ref}/report", readers),
        Call("GET", "/api/cases/report", readers, body=lambda c: {"params": {"case": "ROLES"}}),
        Call("GET", "/api/images/{sha256}", readers),
        Call("GET", "/api/images/{sha256}/thumb", readers),
        Call("GET", "/api/faces/{face_id}/crop", readers | admin),
        Call("POST", "/api/erasures", admin, 200, lambda c: {"json": {
            "face_ids": [c["face_id"]], "reason": "role table", "dry_run": True}}),
        Call("POST", "/api/erasures/photos", admin, 200,
             lambda c: {**photos(c), "data": {"reason": "role table", "dry_run": "true"}}),
        Call("GET", "/api/erasures", admin),
        Call("DELETE", "/api/sources/{name}", admin, 200,
             lambda c: {"params": {"reason": "role table", "dry_run": "true"}}),
        Call("POST", "/api/optouts", admin, 200,
             lambda c: {**photos(c), "data": {"reference": "ROLES", "dry_run": "true"}}),
        Call("GET", "/api/optouts", admin),
        Call("DELETE", "/api/optouts/{reference}", admin),
        Call("POST", "/api/retention/sweep", admin, 200, lambda c: {"json": {"dry_run": True}}),
        Call("GET", "/api/audit", auditor),
        Call("GET", "/api/audit/export", auditor),
        Call("GET", "/api/audit/verify", auditor),
        Call("POST", "/api/subject-access", admin, 200, lambda c: {
            "files": {"photos": (PROBE.name, PROBE.read_bytes())},
            "data": {"reference": "ROLES"}}),
    ]


@pytest.fixture(scope="module")
def ctx(api_server: Server) -> dict[str, Any]:
    """One search by the analyst, a spare user and the ids the paths need."""
    with api_server.client("analyst") as analyst:
        made = analyst.post("/api/searches/upload", **upload({}), data={
            "case_ref": "ROLES", "purpose": "role table"}).json()
    with api_server.client("admin") as admin:
        assert admin.post("/api/users", json={"name": "victim", "role": "auditor"}).is_success
    best = made["result"]["candidates"][0]
    return {"home": api_server.home, "probe": made["search"]["probe_sha256"],
            "search_id": made["search"]["id"], "face_id": best["face_id"],
            "image": best["image"]["sha256"]}


def fill(path: str, ctx: dict[str, Any], sha256: str) -> str:
    return path.format(
        name="victim" if path.startswith("/api/users") else "people",
        job_id=fresh_job(ctx) if "{job_id}" in path else 0,
        sha256=sha256, index=0, search_id=ctx["search_id"], case_ref="ROLES",
        face_id=ctx["face_id"],
        reference=fresh_optout(ctx) if "{reference}" in path else "",
        org=fresh_org(ctx, shared=True) if "{org}" in path else "",
    )


def client_for(server: Server, caller: str) -> httpx.Client:
    if caller == "none":
        return server.client()
    if caller == "bad":
        return server.client(token="ft_" + "x" * 43)
    return server.client(caller)


def test_the_table_lists_every_api_route(api_server: Server) -> None:
    spec = httpx.get(api_server.url + "/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() if p.startswith("/api/")
              for m in ops}
    routes.discard(("POST", "/api/session"))  # the login itself, tested in test_users.py
    assert routes == {(c.method, c.path) for c in table()}


@pytest.mark.parametrize("call", table(), ids=lambda c: f"{c.method} {c.path}")
def test_every_role_gets_exactly_its_rights(
    api_server: Server, ctx: dict[str, Any], call: Call
) -> None:
    got: dict[str, int] = {}
    for caller in CALLERS:
        sha256 = ctx["image"] if call.path.startswith("/api/images") else ctx["probe"]
        with client_for(api_server, caller) as client:
            response = client.request(call.method, fill(call.path, ctx, sha256),
                                      **call.kwargs(ctx))
        got[caller] = response.status_code
        if response.status_code >= 400:
            code = response.json()["error"]["code"]
            assert code == {401: "unauthorized", 403: "forbidden"}[response.status_code]
    expected = {
        caller: (call.ok if caller in call.allowed else 403) if caller in ROLES else 401
        for caller in CALLERS
    }
    assert got == expected


def test_login_with_a_bad_or_revoked_token_is_refused(api_server: Server) -> None:
    with api_server.client() as anon:
        for token in ("", "ft_" + "x" * 43, api_server.tokens["revoked"]):
            response = anon.post("/api/session", json={"token": token})
            assert response.status_code == 401, token
        assert anon.post("/api/session", json={}).status_code == 422
