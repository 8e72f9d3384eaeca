"""Organisations: two agencies, a source of each, one source shared, and a matrix of who sees
what through the CLI, the HTTP API and the pages."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import facetrail
from conftest import PEOPLE, cli_json, run_cli
from stores import own_store, store_url_of
from webserver import Server

PROBE = PEOPLE / "Angelina_Jolie" / "Angelina_Jolie_0104.jpg"
SOURCES = {
    # source: (owner, photos)
    "north-photos": ("north", [("Angelina_Jolie", n) for n in (1, 2, 3)]
                     + [("Joseph_Biden", n) for n in (1, 2, 3)]),
    "south-photos": ("south", [("Angelina_Jolie", n) for n in (4, 5, 6, 101)]
                     + [("Yoko_Ono", n) for n in (1, 2)]),
    "south-shared": ("south", [("Angelina_Jolie", 102), ("Joseph_Biden", 4)]),
}
USERS = {  # name: (role, organisation)
    "n-admin": ("admin", "north"), "n-analyst": ("analyst", "north"),
    "n-reviewer": ("reviewer", "north"), "n-auditor": ("auditor", "north"),
    "s-admin": ("admin", "south"), "s-analyst": ("analyst", "south"),
    "s-reviewer": ("reviewer", "south"), "s-auditor": ("auditor", "south"),
    "overseer": ("oversight", "default"),
}
CASE = {"case_ref": "ORG-1", "purpose": "organisation matrix"}


def jolie_numbers(candidates: list[dict[str, Any]]) -> set[int]:
    """Which Angelina_Jolie_000N photos the candidates are (by their visible appearances)."""
    out = set()
    for c in candidates:
        for a in c["appearances"]:
            name = Path(a["location"]).stem
            if name.startswith("Angelina_Jolie_"):
                out.add(int(name.rsplit("_", 1)[1]))
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("orgs")
    home = root / "home"
    own_store(home)
    run_cli(home, "orgs", "add", "north")
    run_cli(home, "orgs", "add", "south")
    for source, (owner, photos) in SOURCES.items():
        folder = root / source
        folder.mkdir()
        for person, n in photos:
            name = f"{person}_{n:04d}.jpg"
            shutil.copy(PEOPLE / person / name, folder / name)
        run_cli(home, "--org", owner, "sources", "add", source, "--kind", "folder",
                "--uri", str(folder), "--lawful-basis", f"{owner} warrant",
                "--purpose", "testing", "--retention-days", "30")
        run_cli(home, "ingest", source)
    run_cli(home, "sources", "share", "south-shared", "--with", "north",
            "--lawful-basis", "data-sharing agreement 12", "--purpose", "joint operation")
    return home


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[Server]:
    tokens: dict[str, str] = {}
    with facetrail.open(home, store_url=store_url_of(home)) as engine:
        for name, (role, org) in USERS.items():
            tokens[name] = engine.add_user(name, role, org=org, actor="tests")[1]
    server = Server(home, tokens).start()
    try:
        yield server
    finally:
        server.stop()


def search(server: Server, user: str, top: int = 20) -> dict[str, Any]:
    with server.client(user) as client:
        response = client.post(
            "/api/searches/upload", data={**CASE, "top": str(top)},
            files={"file": (PROBE.name, PROBE.read_bytes(), "image/jpeg")})
        assert response.status_code == 201, response.text
        return dict(response.json())


# -- the CLI ---------------------------------------------------------------------------------
def test_cli_searches_cover_only_the_organisations_sources(home: Path) -> None:
    north = cli_json(home, "--org", "north", "search", str(PROBE), "--case", "C",
                     "--purpose", "p")
    south = cli_json(home, "--org", "south", "search", str(PROBE), "--case", "C",
                     "--purpose", "p")
    assert isinstance(north, dict) and isinstance(south, dict)
    assert jolie_numbers(north["candidates"]) == {1, 2, 3, 102}
    assert jolie_numbers(south["candidates"]) == {4, 5, 6, 101, 102}
    seen = {a["source"] for c in north["candidates"] for a in c["appearances"]}
    assert seen <= {"north-photos", "south-shared"}
    # The default organisation owns nothing here: its search has no gallery, and says so
    # rather than reading as "nobody matched".
    empty = run_cli(home, "search", str(PROBE), "--case", "C", "--purpose", "p", "--json",
                    check=False)
    assert empty.returncode != 0
    error = json.loads(empty.stdout)["error"]
    assert error["code"] == "empty_gallery" and "'default'" in error["message"]


def test_top_k_is_filled_with_allowed_candidates(home: Path) -> None:
    north = cli_json(home, "--org", "north", "search", str(PROBE), "--case", "C",
                     "--purpose", "p", "--top", "3")
    assert isinstance(north, dict) and len(north["candidates"]) == 3
    assert jolie_numbers(north["candidates"]) <= {1, 2, 3, 102}


def test_cli_lists_owners_shares_and_organisations(home: Path) -> None:
    sources = cli_json(home, "sources", "list")
    assert isinstance(sources, list)
    assert {s["name"]: s["org"] for s in sources} == {
        "north-photos": "north", "south-photos": "south", "south-shared": "south"}
    orgs = cli_json(home, "orgs", "list")
    assert isinstance(orgs, list)
    assert {o["name"]: o["sources"] for o in orgs} == {"default": 0, "north": 1, "south": 2}
    listing = run_cli(home, "sources", "list").stdout
    assert "north" in listing and "south-shared" in listing
    refused = run_cli(home, "sources", "share", "north-photos", "--with", "north",
                      "--lawful-basis", "x", "--purpose", "y", check=False)
    assert refused.returncode != 0 and "owns" in refused.stderr


# -- the API ---------------------------------------------------------------------------------
def test_api_searches_are_scoped_and_their_appearances_too(server: Server) -> None:
    north = search(server, "n-analyst")
    assert jolie_numbers(north["result"]["candidates"]) == {1, 2, 3, 102}
    sources = {a["source"] for c in north["result"]["candidates"] for a in c["appearances"]}
    assert sources <= {"north-photos", "south-shared"}
    south = search(server, "s-analyst", top=2)
    assert len(south["result"]["candidates"]) == 2
    assert jolie_numbers(south["result"]["candidates"]) <= {4, 5, 6, 101, 102}


def _face_of(server: Server, user: str, number: int) -> dict[str, Any]:
    found = search(server, user)["result"]["candidates"]
    return next(c for c in found if number in jolie_numbers([c]))


def test_media_of_another_organisation_does_not_exist(server: Server) -> None:
    north_only = _face_of(server, "n-analyst", 1)
    south_only = _face_of(server, "s-analyst", 4)
    shared = _face_of(server, "s-analyst", 102)
    with server.client("s-analyst") as south, server.client("n-analyst") as north:
        for client, face, ok in ((south, north_only, False), (north, south_only, False),
                                 (north, north_only, True), (north, shared, True)):
            sha = face["image"]["sha256"]
            for url in (f"/api/faces/{face['face_id']}/crop", f"/api/images/{sha}",
                        f"/api/images/{sha}/thumb"):
                assert client.get(url).status_code == (200 if ok else 404), url
        # A thumbnail kept for one organisation is not served to another either.
        sha = north_only["image"]["sha256"]
        assert north.get(f"/api/images/{sha}/thumb").status_code == 200
        assert south.get(f"/api/images/{sha}/thumb").status_code == 404


def test_probes_searches_and_reviews_stay_in_their_organisation(server: Server) -> None:
    made = search(server, "n-analyst")
    search_id, sha = made["search"]["id"], made["search"]["probe_sha256"]
    with server.client("s-analyst") as south, server.client("s-reviewer") as s_rev, \
            server.client("n-reviewer") as n_rev:
        assert south.get(f"/api/searches/{search_id}").status_code == 404
        assert south.get(f"/api/probes/{sha}/image").status_code in (200, 404)
        listed = south.get("/api/searches").json()["searches"]
        assert search_id not in [s["id"] for s in listed]
        queue = "/api/reviews/queue"
        assert search_id not in [s["id"] for s in s_rev.get(queue).json()["searches"]]
        assert search_id in [s["id"] for s in n_rev.get(queue).json()["searches"]]
        face_id = made["result"]["candidates"][0]["face_id"]
        refused = s_rev.post(f"/api/searches/{search_id}/reviews",
                             json={"face_id": face_id, "decision": "confirm", "note": "x"})
        assert refused.status_code == 404
        done = n_rev.post(f"/api/searches/{search_id}/reviews",
                          json={"face_id": face_id, "decision": "confirm", "note": "same"})
        assert done.status_code == 201, done.text


def test_a_probe_uploaded_by_one_organisation_is_not_shown_to_another(
    server: Server, tmp_path: Path
) -> None:
    from PIL import Image

    own = tmp_path / "own.jpg"
    Image.open(PROBE).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(own)
    with server.client("n-analyst") as north, server.client("s-analyst") as south:
        uploaded = north.post("/api/probes", files={"file": (own.name, own.read_bytes())})
        assert uploaded.status_code in (200, 201), uploaded.text
        sha = uploaded.json()["probe"]["sha256"]
        assert north.get(f"/api/probes/{sha}").status_code == 200
        assert south.get(f"/api/probes/{sha}").status_code == 404
        assert south.get(f"/api/probes/{sha}/image").status_code == 404
        assert south.post("/api/searches", json={"probe_sha256": sha, **CASE}
                          ).status_code == 404


def test_auditors_read_their_organisation_and_oversight_every_one(server: Server) -> None:
    search(server, "n-analyst")
    search(server, "s-analyst")

    def events(user: str) -> list[dict[str, Any]]:
        with server.client(user) as client:
            response = client.get("/api/audit", params={"limit": 10_000})
            assert response.status_code == 200, response.text
            return list(response.json()["events"])

    north, south, everything = events("n-auditor"), events("s-auditor"), events("overseer")
    assert north and {e["org"] for e in north} == {"north"}
    assert south and {e["org"] for e in south} == {"south"}
    searchers = {e["actor"] for e in north if e["action"] == "search"}
    assert "n-analyst" in searchers and not searchers & {"s-analyst", "s-admin"}
    ids = {e["id"] for e in everything}
    assert {e["id"] for e in north} < ids and {e["id"] for e in south} < ids
    # Sharing is recorded in both organisations' logs.
    assert any(e["action"] == "source.share" for e in north)
    assert any(e["action"] == "source.share" for e in south)
    with server.client("overseer") as client:
        assert client.get("/api/audit/verify").json()["ok"] is True
        for method, url in (("GET", "/api/sources"), ("GET", "/api/searches"),
                            ("POST", "/api/probes"), ("GET", "/api/users")):
            assert client.request(method, url).status_code == 403, url


def test_admins_manage_only_their_organisations_sources_and_users(server: Server) -> None:
    with server.client("n-admin") as north:
        names = [s["name"] for s in north.get("/api/sources").json()["sources"]]
        assert sorted(names) == ["north-photos", "south-shared"]
        assert north.patch("/api/sources/south-photos", json={"retention_days": 5}
                           ).status_code == 404
        assert north.patch("/api/sources/south-shared", json={"retention_days": 5}
                           ).status_code == 403
        assert north.post("/api/jobs", json={"source": "south-shared"}).status_code == 403
        assert north.patch("/api/sources/north-photos", json={"retention_days": 9}
                           ).status_code == 200
        users = {u["name"] for u in north.get("/api/users").json()["users"]}
        assert users == {"n-admin", "n-analyst", "n-reviewer", "n-auditor"}
        assert north.post("/api/users/s-analyst/revoke").status_code == 404
        made = north.post("/api/users", json={"name": "n-new", "role": "analyst"}).json()
        assert made["user"]["org"] == "north"


def test_pages_show_only_the_organisations_own(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as browser:
        page = browser.get("/login")
        token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        logged = browser.post("/login", data={"token": server.tokens["n-admin"],
                                              "csrf_token": token},
                              headers={"Origin": server.url})
        assert logged.status_code in (200, 303), logged.text
        sources = browser.get("/sources").text
        assert "north-photos" in sources and "south-shared" in sources
        assert "south-photos" not in sources


def test_owners_share_and_unshare_sources_over_the_api(server: Server) -> None:
    share = {"org": "north", "lawful_basis": "agreement 13", "purpose": "joint operation"}
    with server.client("s-admin") as south, server.client("n-admin") as north:
        assert {"default", "north", "south"} <= {
            o["name"] for o in south.get("/api/orgs").json()["orgs"]}
        assert [s["org"] for s in south.get("/api/sources/south-shared/shares").json()[
            "shares"]] == ["north"]
        blank = south.post("/api/sources/south-photos/shares",
                           json={**share, "lawful_basis": " "})
        assert (blank.status_code, blank.json()["error"]["code"]) == (422, "policy_error")
        assert south.post("/api/sources/south-photos/shares",
                          json={**share, "org": "nowhere"}).status_code == 404
        made = south.post("/api/sources/south-photos/shares", json=share)
        assert made.status_code == 201, made.text
        assert made.json()["share"]["lawful_basis"] == "agreement 13"
        assert south.post("/api/sources/south-photos/shares", json=share).status_code == 409
        try:
            names = {s["name"] for s in north.get("/api/sources").json()["sources"]}
            assert "south-photos" in names
            # Only the owner shares: north may not pass it on, nor see who else has it.
            assert north.post("/api/sources/south-photos/shares",
                              json={**share, "org": "default"}).status_code == 403
            assert north.get("/api/sources/south-photos/shares").status_code == 403
            assert north.post("/api/sources/nowhere/shares", json=share).status_code == 404
            assert north.post("/api/orgs", json={"name": "east"}).status_code == 403
        finally:
            assert south.delete("/api/sources/south-photos/shares/north").status_code == 200
        assert south.delete("/api/sources/south-photos/shares/north").status_code == 404
        assert "south-photos" not in {
            s["name"] for s in north.get("/api/sources").json()["sources"]}
    for auditor in ("s-auditor", "n-auditor"):  # in both organisations' logs
        with server.client(auditor) as client:
            actions = [e["action"] for e in client.get(
                "/api/audit", params={"actor": "s-admin"}).json()["events"]]
            assert {"source.share", "source.unshare"} <= set(actions), (auditor, actions)


def test_only_the_deployment_adds_organisations_over_the_api(server: Server) -> None:
    with facetrail.open(server.home, store_url=store_url_of(server.home)) as engine:
        token = engine.add_user("d-admin", "admin", actor="tests")[1]
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {token}"}) as deployment:
        made = deployment.post("/api/orgs", json={"name": "east"})
        assert made.status_code == 201 and made.json()["org"]["name"] == "east"
        assert deployment.post("/api/orgs", json={"name": "east"}).status_code == 409
        assert deployment.post("/api/orgs", json={"name": ""}).status_code == 422
        for name in ("east\u202etsew", "two words", "new\nline"):
            refused = deployment.post("/api/orgs", json={"name": name})
            assert refused.json()["error"]["code"] == "policy_error", name
    with server.client("s-admin") as south:
        assert south.post("/api/orgs", json={"name": "west"}).status_code == 403
        assert "east" in {o["name"] for o in south.get("/api/orgs").json()["orgs"]}


@contextmanager
def logged_in_browser(server: Server, user: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, headers={"Origin": server.url},
                      follow_redirects=True) as browser:
        page = browser.get("/login")
        logged = browser.post("/login", data={"token": server.tokens[user],
                                              "csrf_token": csrf_of(page.text)})
        assert logged.status_code == 200, logged.text
        yield browser


def csrf_of(page: str) -> str:
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def test_the_sources_page_shares_and_stops_sharing(server: Server) -> None:
    with logged_in_browser(server, "s-admin") as south, \
            logged_in_browser(server, "n-admin") as north:
        page = south.get("/sources").text
        assert 'data-testid="share-form"' in page
        row = page.split('data-source="south-shared"', 1)[1].split("</tr>", 1)[0]
        assert "<td>yours</td>" in row and "Stop sharing south-shared with north" in row
        shared = south.post("/sources/share", data={
            "csrf_token": csrf_of(page), "source": "south-photos", "org": "north",
            "lawful_basis": "agreement 14", "purpose": "joint operation"})
        assert shared.status_code == 200 and "south-photos is now shared with north" in (
            shared.text)
        # North sees it, shared by south, with no ingest button and nobody else's sharings.
        theirs = north.get("/sources").text
        row = theirs.split('data-source="south-photos"', 1)[1].split("</tr>", 1)[0]
        assert "(shared with you)" in row and "Start ingest" not in row and "unshare" not in row
        refused = north.post("/sources/unshare", data={
            "csrf_token": csrf_of(theirs), "source": "south-photos", "org": "north"})
        assert refused.status_code == 403
        stopped = south.post("/sources/unshare", data={
            "csrf_token": csrf_of(shared.text), "source": "south-photos", "org": "north"})
        assert "south-photos is no longer shared with north" in stopped.text
        assert 'data-source="south-photos"' not in north.get("/sources").text
        # Without the page's CSRF token nothing is shared.
        forged = south.post("/sources/share", data={
            "source": "south-photos", "org": "north", "lawful_basis": "x", "purpose": "y"})
        assert forged.status_code == 403
        assert 'data-source="south-photos"' not in north.get("/sources").text
