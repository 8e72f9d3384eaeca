"""Ids in URLs are bounded (an id past the stores' 64-bit integers is a 422 JSON error, never a
plain-text 500), and nothing holding case data or biometrics is cached: JSON, pages, probe
images and crops are ``no-store``; only static assets may be cached."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from conftest import PEOPLE, run_cli
from webserver import Server

HUGE = "99999999999999999999"


def int_parameters(schema: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, path) of every API route with an integer path parameter, filled with HUGE."""
    found = []
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            ints = [p["name"] for p in op.get("parameters", [])
                    if p["in"] == "path" and p["schema"].get("type") == "integer"]
            if ints:
                filled = re.sub(r"\{(\w+)\}",
                                lambda m, ints=ints: HUGE if m[1] in ints else "a" * 64,
                                "/api" + path if not path.startswith("/api") else path)
                found.append((method.upper(), filled))
    return found


def test_huge_ids_are_refused_as_json(api_server: Server) -> None:
    with httpx.Client(base_url=api_server.url) as anonymous:
        schema = anonymous.get("/openapi.json").json()
    routes = int_parameters(schema)
    assert ("GET", f"/api/faces/{HUGE}/crop") in routes and len(routes) >= 5, routes
    pages = [("GET", f"/searches/{HUGE}"), ("GET", f"/review/{HUGE}"),
             ("POST", f"/review/{HUGE}/{HUGE}"), ("POST", f"/sources/jobs/{HUGE}/cancel")]
    for user in ("admin", "analyst", "reviewer"):
        with api_server.client(user) as client:
            for method, path in routes + pages:
                response = client.request(method, path, json={})
                assert response.status_code in (403, 404, 422), (user, method, path,
                                                                  response.text)
                kind = response.headers["content-type"]
                if not path.startswith("/api"):  # a page answers with a page
                    assert kind.startswith("text/html"), (path, kind)
                    continue
                assert kind.startswith("application/json")
                if response.status_code == 422:
                    assert response.json()["error"]["code"] == "invalid_request"
        with api_server.client("analyst") as client:
            got = client.get(f"/api/audit?after_id={HUGE}")
            assert got.status_code in (403, 422)


def test_nothing_biometric_or_case_related_is_cached(api_server: Server) -> None:
    photo = PEOPLE / "Ashanti" / "Ashanti_0001.jpg"
    with api_server.client("analyst") as analyst:
        probe = analyst.post("/api/probes", files={"file": (photo.name, photo.read_bytes())},
                             data={"case_ref": "H-1", "purpose": "headers"})
        assert probe.status_code in (200, 201), probe.text
        sha = probe.json()["probe"]["sha256"]
        found = analyst.post("/api/searches", json={"probe_sha256": sha, "case_ref": "H-1",
                                                    "purpose": "headers"})
        assert found.status_code in (200, 201), found.text
        face_id = found.json()["result"]["candidates"][0]["face_id"]
        for path in ("/api/sources/..", "/api/searches", f"/api/probes/{sha}/image",
                     f"/api/probes/{sha}/faces/0/crop", f"/api/faces/{face_id}/crop",
                     "/search", "/api/nothing-here"):
            response = analyst.get(path)
            assert "no-store" in response.headers.get("cache-control", ""), (
                path, response.status_code, response.headers)
            assert "max-age" not in response.headers["cache-control"], path
    with httpx.Client(base_url=api_server.url) as anonymous:
        refused = anonymous.get("/api/searches")
        assert refused.status_code == 401 and refused.headers["cache-control"] == "no-store"
        static = anonymous.get("/static/app.css")
        assert static.status_code == 200 and "no-store" not in static.headers["cache-control"]


def test_huge_ids_on_the_command_line_are_usage_errors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run_cli(home, "users", "add", "x", "--role", "analyst")
    for args in (("jobs", "cancel", HUGE), ("review", HUGE, "1", "confirm", "--note", "n")):
        proc = run_cli(home, *args, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "range" in proc.stderr, proc.stderr
