"""The HTTP API against a real server: search as a record, review, reports, media, limits."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import FACES, PEOPLE, cli_json, identity_of, run_cli
from facetrail.audit import os_user
from facetrail.imaging import sha256_hex
from stores import raw_sql, store_url_of
from webserver import Server

GROUP = FACES / "group" / "two_people.jpg"
OBAMA = PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg"


def upload(client: httpx.Client, path: Path) -> dict[str, Any]:
    response = client.post("/api/probes", files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 201, response.text
    return dict(response.json()["probe"])


def first_other(result: dict[str, Any], probe_sha: str) -> dict[str, Any]:
    """The best candidate of a known identity that is not the probe image itself (the probes
    are in the gallery too; edge_cases/ holds another copy of one photo, of no known name)."""
    return next(
        c for c in result["candidates"] if c["image"]["sha256"] != probe_sha and identities(c)
    )


def identities(candidate: dict[str, Any]) -> set[str]:
    return set().union(*(identity_of(a["location"]) for a in candidate["appearances"]))


def test_docs_are_public_and_everything_else_needs_a_token(api_server: Server) -> None:
    with httpx.Client(base_url=api_server.url, timeout=60) as anon:
        assert anon.get("/docs").status_code == 200
        spec = anon.get("/openapi.json").json()
        assert "/api/searches" in spec["paths"]
        refused = anon.get("/api/searches")
        assert refused.status_code == 401
        assert refused.json() == {"error": {
            "code": "unauthorized",
            "message": "a token is required: 'Authorization: Bearer <token>' or log in"}}
        assert anon.get("/api/nothing-here").json()["error"]["code"] == "not_found"


def test_two_step_search_is_kept_and_finds_each_face(api_server: Server) -> None:
    with api_server.client("analyst") as analyst:
        probe = upload(analyst, GROUP)
        assert probe["sha256"] == sha256_hex(GROUP.read_bytes())
        assert len(probe["faces"]) == 2
        assert probe["faces"][0]["box"][2] >= probe["faces"][1]["box"][2]  # largest first
        found = []
        for face in (0, 1):
            response = analyst.post("/api/searches", json={
                "probe_sha256": probe["sha256"], "face": face, "case_ref": "API-1",
                "purpose": "two-step test", "top": 5})
            assert response.status_code == 201, response.text
            body = response.json()
            assert body["search"]["probe_face"] == face
            assert body["result"]["probe"]["searched_faces"] == [face]
            best = first_other(body["result"], probe["sha256"])
            assert best["crop_url"] == f"/api/faces/{best['face_id']}/crop"
            found.append(identities(best))
            kept = analyst.get(body["search"]["url"]).json()
            assert kept["result"]["candidates"] == body["result"]["candidates"]
            assert kept["search"]["actor"] == "analyst"
        assert found[0] | found[1] == {"Barack_Obama", "Joseph_Biden"}
        assert found[0] != found[1]
        listed = analyst.get("/api/searches", params={"case": "API-1"}).json()["searches"]
        assert [s["probe_face"] for s in listed] == [1, 0]  # newest first

    with api_server.client("auditor") as auditor:
        events = auditor.get("/api/audit", params={"case": "API-1"}).json()["events"]
    assert [e["action"] for e in events] == ["search", "search"]
    assert {e["actor"] for e in events} == {"analyst"}
    assert events[0]["purpose"] == "two-step test"
    assert events[0]["details"]["probe_sha256"] == probe["sha256"]
    assert events[0]["details"]["candidate_face_ids"]


def test_one_step_upload_and_the_rules_of_a_search(api_server: Server) -> None:
    with api_server.client("analyst") as analyst:
        response = analyst.post(
            "/api/searches/upload", files={"file": (OBAMA.name, OBAMA.read_bytes())},
            data={"case_ref": "API-2", "purpose": "one step"},
        )
        assert response.status_code == 201, response.text
        best = first_other(response.json()["result"], sha256_hex(OBAMA.read_bytes()))
        assert "Barack_Obama" in identities(best)

        missing = analyst.post(
            "/api/searches/upload", files={"file": (OBAMA.name, OBAMA.read_bytes())},
            data={"case_ref": "API-2", "purpose": "   "},
        )
        assert missing.status_code == 422
        assert missing.json()["error"]["code"] == "policy_error"
        no_case = analyst.post("/api/searches", json={
            "probe_sha256": sha256_hex(OBAMA.read_bytes()), "purpose": "x"})
        assert no_case.status_code == 422
        assert no_case.json()["error"]["code"] == "invalid_request"
        no_face = analyst.post("/api/searches", json={
            "probe_sha256": sha256_hex(OBAMA.read_bytes()), "face": 3, "case_ref": "API-2",
            "purpose": "x"})
        assert no_face.status_code == 422 and "face 3 does not exist" in no_face.text
        unknown = analyst.post("/api/searches", json={
            "probe_sha256": "0" * 64, "case_ref": "API-2", "purpose": "x"})
        assert unknown.status_code == 404
        cat = FACES / "noface" / "skimage_chelsea.jpg"
        no_faces = analyst.post(
            "/api/searches/upload", files={"file": (cat.name, cat.read_bytes())},
            data={"case_ref": "API-2", "purpose": "x"})
        assert no_faces.status_code == 422
        junk = analyst.post("/api/probes", files={"file": ("x.jpg", b"not an image")})
        assert junk.status_code == 422 and junk.json()["error"]["code"] == "bad_image"


def test_review_two_person_rule_queue_and_report(api_server: Server) -> None:
    with api_server.client("analyst2") as analyst:
        probe = upload(analyst, OBAMA)
        made = analyst.post("/api/searches", json={
            "probe_sha256": probe["sha256"], "case_ref": "API-3", "purpose": "review test",
            "top": 3}).json()
    search_id = made["search"]["id"]
    face_ids = [c["face_id"] for c in made["result"]["candidates"]]
    assert len(face_ids) == 3

    with api_server.client("reviewer") as reviewer:
        queue = reviewer.get("/api/reviews/queue").json()["searches"]
        assert search_id in [s["id"] for s in queue]
        url = f"/api/searches/{search_id}/reviews"
        ok = reviewer.post(url, json={"face_id": face_ids[0], "decision": "confirm",
                                      "note": "same person, same scar"})
        assert ok.status_code == 201, ok.text
        assert reviewer.post(url, json={"face_id": face_ids[0], "decision": "reject",
                                        "note": "again"}).status_code == 409
        assert reviewer.post(url, json={"face_id": 999_999, "decision": "reject",
                                        "note": "x"}).status_code == 404
        assert reviewer.post(url, json={"face_id": face_ids[1], "decision": "maybe",
                                        "note": "x"}).status_code == 422
        blank = reviewer.post(url, json={"face_id": face_ids[1], "decision": "reject",
                                         "note": " "})
        assert blank.status_code == 422 and blank.json()["error"]["code"] == "policy_error"
        for face_id in face_ids[1:]:
            assert reviewer.post(url, json={"face_id": face_id, "decision": "reject",
                                            "note": "different person"}).status_code == 201
        queue = reviewer.get("/api/reviews/queue").json()["searches"]
        assert search_id not in [s["id"] for s in queue]
        shown = reviewer.get(f"/api/searches/{search_id}").json()
        decisions = [[r["decision"] for r in c["reviews"]] for c in shown["result"]["candidates"]]
        assert decisions == [["confirm"], ["reject"], ["reject"]]

        json_report = reviewer.get("/api/cases/API-3/report").json()
        assert [s["search"]["id"] for s in json_report["searches"]] == [search_id]
        response = reviewer.get("/api/cases/API-3/report", params={"format": "csv"})
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert {int(r["face_id"]) for r in rows} == set(face_ids)
        assert {r["decisions"] for r in rows if int(r["face_id"]) == face_ids[0]} == {
            "reviewer:confirm"}
        assert all(r["case_ref"] == "API-3" and r["analyst"] == "analyst2" for r in rows)

    with api_server.client("auditor") as auditor:
        events = auditor.get("/api/audit", params={"case": "API-3", "action": "review"}).json()
    details = [e["details"] for e in events["events"]]
    assert [(d["face_id"], d["decision"]) for d in details] == [
        (face_ids[0], "confirm"), (face_ids[1], "reject"), (face_ids[2], "reject")]
    assert details[0]["note"] == "same person, same scar"
    assert details[0]["probe_sha256"] == probe["sha256"]


def test_a_reviewer_never_reviews_their_own_search(api_server: Server) -> None:
    """The two-person rule holds even for an account that could search (made in the store)."""
    url = store_url_of(api_server.home)
    with api_server.client("analyst") as analyst:
        probe = upload(analyst, OBAMA)
        made = analyst.post("/api/searches", json={
            "probe_sha256": probe["sha256"], "case_ref": "API-4", "purpose": "own"}).json()
    # The analyst later becomes a reviewer: their own searches stay out of their reach.
    raw_sql(url, "UPDATE users SET role='reviewer' WHERE name='analyst'")
    try:
        with api_server.client("analyst") as same_person:
            queue = same_person.get("/api/reviews/queue").json()["searches"]
            assert made["search"]["id"] not in [s["id"] for s in queue]
            refused = same_person.post(f"/api/searches/{made['search']['id']}/reviews", json={
                "face_id": made["result"]["candidates"][0]["face_id"], "decision": "confirm",
                "note": "looks right"})
    finally:
        raw_sql(url, "UPDATE users SET role='analyst' WHERE name='analyst'")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "own_search_review"


def without_urls(record: dict[str, Any]) -> dict[str, Any]:
    """An API search record as the CLI prints it: the same, less the URLs."""
    urls = ("url", "probe_face_crop_url", "crop_url", "image_url", "thumb_url")
    search = {k: v for k, v in record["search"].items() if k not in urls}
    candidates = [{k: v for k, v in c.items() if k not in urls}
                  for c in record["result"]["candidates"]]
    return {"search": search, "result": {**record["result"], "candidates": candidates}}


def test_cli_and_http_searches_are_the_same_case_records(api_server: Server) -> None:
    """A search made on the command line is a case record like one made over HTTP: the web
    lists, reviews and reports it; the local operator (the OS user) reviews web searches, and
    never their own."""
    home = api_server.home
    kept = cli_json(home, "search", str(OBAMA), "--case", "BOTH-1", "--purpose", "cli and web",
                    "--top", "3")
    assert isinstance(kept, dict)
    cli_id = kept["search_id"]
    with api_server.client("analyst2") as analyst:
        web = analyst.post(
            "/api/searches/upload", files={"file": (OBAMA.name, OBAMA.read_bytes())},
            data={"case_ref": "BOTH-1", "purpose": "cli and web", "top": "3"}).json()
        listed = analyst.get("/api/searches", params={"case": "BOTH-1"}).json()["searches"]
    web_id = web["search"]["id"]
    assert [(s["id"], s["actor"]) for s in listed] == [(web_id, "analyst2"), (cli_id, os_user())]
    assert listed[1]["probe_sha256"] == web["search"]["probe_sha256"] == sha256_hex(
        OBAMA.read_bytes())
    assert [c["face_id"] for c in kept["candidates"]] == [
        c["face_id"] for c in web["result"]["candidates"]]
    assert (home / "probes" / listed[1]["probe_sha256"][:2] / listed[1]["probe_sha256"]).is_file()

    face = kept["candidates"][0]["face_id"]
    with api_server.client("reviewer") as reviewer:
        queue = [s["id"] for s in reviewer.get("/api/reviews/queue").json()["searches"]]
        assert {cli_id, web_id} <= set(queue)
        assert reviewer.post(f"/api/searches/{cli_id}/reviews", json={
            "face_id": face, "decision": "confirm", "note": "web review"}).status_code == 201
    web_face = web["result"]["candidates"][1]["face_id"]
    reviewed = cli_json(home, "review", str(web_id), str(web_face), "reject", "--note",
                        "cli review")
    assert reviewed == reviewed | {"reviewer": os_user(), "decision": "reject",
                                   "search_id": web_id, "face_id": web_face}
    own = run_cli(home, "review", str(cli_id), str(kept["candidates"][1]["face_id"]), "reject",
                  "--note", "mine", "--json", check=False)
    assert own.returncode == 2 and json.loads(own.stdout)["error"]["code"] == "own_search_review"
    pending = cli_json(home, "searches", "list", "--pending")
    assert isinstance(pending, list)
    assert web_id in [s["id"] for s in pending] and cli_id not in [s["id"] for s in pending]

    with api_server.client("reviewer") as reviewer:
        for search_id in (cli_id, web_id):
            over_http = reviewer.get(f"/api/searches/{search_id}").json()
            assert without_urls(over_http) == cli_json(home, "searches", "show", str(search_id))
        api_csv = reviewer.get("/api/cases/BOTH-1/report", params={"format": "csv"}).text
        api_json = reviewer.get("/api/cases/BOTH-1/report").json()
    cli_csv = run_cli(home, "searches", "report", "BOTH-1", "--format", "csv").stdout
    assert cli_csv.splitlines() == api_csv.splitlines() and len(cli_csv.splitlines()) > 3
    cli_report = json.loads(run_cli(home, "searches", "report", "BOTH-1").stdout)
    assert cli_report == {**api_json, "searches": [without_urls(s) for s in api_json["searches"]]}
    with api_server.client("auditor") as auditor:
        events = auditor.get("/api/audit", params={"case": "BOTH-1"}).json()["events"]
    assert [(e["action"], e["actor"]) for e in events] == [
        ("search", os_user()), ("search", "analyst2"), ("review", "reviewer"),
        ("review", os_user())]
    assert events[0]["id"] == kept["audit_id"] and events[2]["details"]["search_id"] == cli_id


@pytest.mark.parametrize("user", ["analyst", "reviewer"])
def test_media_by_hash_and_face_id(api_server: Server, user: str) -> None:
    with api_server.client("analyst") as analyst:
        made = analyst.post(
            "/api/searches/upload", files={"file": (GROUP.name, GROUP.read_bytes())},
            data={"case_ref": "API-5", "purpose": "media"}).json()
    best = made["result"]["candidates"][0]
    probe_sha = made["search"]["probe_sha256"]
    with api_server.client(user) as client:
        original = client.get(best["image_url"])
        assert original.status_code == 200
        assert sha256_hex(original.content) == best["image"]["sha256"]
        assert original.headers["content-type"] == "image/jpeg"
        for url in (best["crop_url"], best["thumb_url"], made["search"]["probe_face_crop_url"]):
            first = client.get(url)
            assert first.status_code == 200 and first.content[:3] == b"\xff\xd8\xff", url
            assert client.get(url).content == first.content
        probe = client.get(f"/api/probes/{probe_sha}/image")
        assert sha256_hex(probe.content) == probe_sha
    crops = list((api_server.home / "cache" / "crops").glob(f"{best['face_id']}-*.jpg"))
    assert len(crops) == 1


def test_audit_query_filters_and_export(api_server: Server) -> None:
    with api_server.client("analyst2") as analyst:
        made = analyst.post(
            "/api/searches/upload", files={"file": (OBAMA.name, OBAMA.read_bytes())},
            data={"case_ref": "API-6", "purpose": "audit filters"}).json()
    with api_server.client("auditor") as auditor:
        events = auditor.get("/api/audit", params={"case": "API-6"}).json()["events"]
        assert [(e["action"], e["actor"]) for e in events] == [("search", "analyst2")]
        event = events[0]
        assert event["id"] == made["search"]["audit_id"]
        assert event["at"].endswith("Z")
        day = event["at"][:10]
        for since, until, count in ((day, None, 1), (None, day, 0), ("2999-01-01", None, 0)):
            params = {k: v for k, v in (("since", since), ("until", until)) if v}
            got = auditor.get("/api/audit", params={"case": "API-6", **params}).json()
            assert len(got["events"]) == count, params
        by_user = auditor.get("/api/audit", params={"actor": "analyst2"}).json()["events"]
        assert event in by_user and {e["actor"] for e in by_user} == {"analyst2"}
        paged = auditor.get("/api/audit", params={"limit": 2}).json()
        assert len(paged["events"]) == 2 and paged["next_after_id"] == paged["events"][1]["id"]

        export = auditor.get("/api/audit/export", params={"case": "API-6"})
        assert export.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in export.text.splitlines()]
        assert lines == events
        verified = auditor.get("/api/audit/verify").json()
        assert verified["ok"] is True and verified["events"] >= event["id"]
