"""Erasure, opt-out, source removal and the retention sweep over HTTP, on a server of their own.

Only an admin of the 'default' organisation may carry them out; everyone else gets 403 and
nothing changes. The tests touch disjoint people of the gallery; the sweep, which expires the
whole gallery, runs last.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

import facetrail
from conftest import FACES, PEOPLE
from facetrail.store import AuditQuery, open_store
from facetrail.store.base import AuditRow
from facetrail.web.sweeper import LAST_SWEEP, SWEEP_ACTOR
from stores import copy_home, store_url_of
from webserver import Server, add_users, login_form_token

FORBIDDEN = ("analyst", "reviewer", "auditor", "north_admin")


@pytest.fixture(scope="module")
def server(gallery_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server over a private copy of the gallery, with the usual accounts and an admin of
    another organisation, 'north'."""
    home = tmp_path_factory.mktemp("rights") / "home"
    copy_home(gallery_home, home)
    tokens = add_users(home)
    with facetrail.open(home, store_url=store_url_of(home)) as engine:
        engine.add_org("north", actor="tests")
        tokens["north_admin"] = engine.add_user("north_admin", "admin", actor="tests",
                                                org="north")[1]
    server = Server(home, tokens).start()
    try:
        yield server
    finally:
        server.stop()


def photo(person: str, n: int = 1) -> Path:
    return PEOPLE / person / f"{person}_{n:04d}.jpg"


def search(server: Server, probe: Path, case: str) -> dict[str, Any]:
    with server.client("analyst") as analyst:
        made = analyst.post("/api/searches/upload", files={"file": (probe.name,
                            probe.read_bytes())}, data={"case_ref": case, "purpose": "rights"})
    assert made.status_code == 201, made.text
    found: dict[str, Any] = made.json()
    return found


def face_ids(found: dict[str, Any]) -> list[int]:
    return [c["face_id"] for c in found["result"]["candidates"]]


def state(server: Server) -> dict[str, Any]:
    """What the rights routes change: erasures, opt-outs, sources, a search's candidates."""
    with server.client("admin") as admin:
        return {
            "erasures": admin.get("/api/erasures").json()["erasures"],
            "optouts": admin.get("/api/optouts").json()["optouts"],
            "sources": sorted(s["name"] for s in admin.get("/api/sources").json()["sources"]),
            "found": face_ids(search(server, photo("Jennifer_Aniston"), "STATE")),
        }


def test_only_an_admin_of_the_default_organisation_may(server: Server) -> None:
    before = state(server)
    face = before["found"][0]
    probe = photo("Jennifer_Aniston")
    upload = {"files": [("photos", (probe.name, probe.read_bytes()))]}
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/api/erasures", {"json": {"face_ids": [face], "reason": "no"}}),
        ("POST", "/api/erasures", {"json": {"source": "people", "reason": "no"}}),
        ("POST", "/api/erasures/photos", {**upload, "data": {"reason": "no"}}),
        ("GET", "/api/erasures", {}),
        ("POST", "/api/optouts", {**upload, "data": {"reference": "NO"}}),
        ("GET", "/api/optouts", {}),
        ("DELETE", "/api/optouts/NO", {}),
        ("POST", "/api/retention/sweep", {"json": {"as_of": "2100-01-01"}}),
        ("DELETE", "/api/sources/people", {"params": {"reason": "no"}}),
    ]
    for user in FORBIDDEN:
        with server.client(user) as client:
            for method, path, kwargs in calls:
                response = client.request(method, path, **kwargs)
                assert response.status_code == 403, (user, method, path, response.text)
                assert response.json()["error"]["code"] == "forbidden"
    with server.client("north_admin") as north:  # nor does it see faces to erase
        assert north.get(f"/api/faces/{face}/crop").status_code == 403
    assert state(server) == before


def test_a_dry_run_changes_nothing(server: Server) -> None:
    before = state(server)
    face = before["found"][0]
    with server.client("admin") as admin:
        response = admin.post("/api/erasures", json={
            "face_ids": [face], "reason": "a request", "dry_run": True})
        assert response.status_code == 200, response.text
        report = response.json()["erasure"]
        assert report["dry_run"] and report["erasure_id"] is None
        assert report["face_ids"] == [face] and report["counts"]["faces"] == 1
        probe = photo("Jennifer_Aniston")
        response = admin.post("/api/optouts", files=[("photos", (probe.name,
                              probe.read_bytes()))], data={"reference": "DRY", "dry_run": "true"})
        assert response.status_code == 200, response.text
        assert response.json()["optout"] is None
        assert face in [m["face_id"] for m in response.json()["erasure"]["matches"]]
        assert admin.request("DELETE", "/api/sources/people", params={
            "reason": "a request", "dry_run": "true"}).json()["erasure"]["counts"]["faces"] > 0
        swept = admin.post("/api/retention/sweep", json={"as_of": "2100-01-01",
                                                         "dry_run": True}).json()["sweep"]
        assert swept["dry_run"] and swept["erasures"] == []
        assert admin.get(f"/api/faces/{face}/crop").status_code == 200  # the admin may look
    assert state(server) == before


def test_bad_requests_say_what_is_wrong(server: Server) -> None:
    with server.client("admin") as admin:
        both = admin.post("/api/erasures", json={"face_ids": [1], "image": "0" * 64,
                                                 "reason": "x"})
        assert both.status_code == 422 and "exactly one" in both.text
        no_reason = admin.request("DELETE", "/api/sources/people")
        assert no_reason.status_code == 422
        assert admin.post("/api/erasures", json={"face_ids": [999999999],
                                                 "reason": "x"}).status_code == 404
        assert admin.post("/api/retention/sweep", json={"as_of": "soon"}).status_code == 422


def test_an_erased_face_leaves_results_and_kept_searches_show_a_tombstone(
    server: Server,
) -> None:
    kept = search(server, photo("Barack_Obama", 2), "ERASE-1")
    face = kept["result"]["candidates"][0]["face_id"]
    with server.client("admin") as admin:
        response = admin.post("/api/erasures", json={"face_ids": [face],
                                                     "reason": "data subject request 17"})
        assert response.status_code == 200, response.text
        report = response.json()["erasure"]
        assert report["erasure_id"] is not None and report["face_ids"] == [face]
        assert report["counts"]["searches"] >= 1 and report["index_removed"] == 1
        listed = admin.get("/api/erasures").json()["erasures"]
        assert listed[0]["id"] == report["erasure_id"]
        assert listed[0]["reason"] == "data subject request 17"
        assert admin.get(f"/api/faces/{face}/crop").status_code == 404
    assert face not in face_ids(search(server, photo("Barack_Obama", 2), "ERASE-2"))

    search_id = kept["search"]["id"]
    with server.client("analyst") as analyst:
        record = analyst.get(f"/api/searches/{search_id}").json()
        tomb = next(c for c in record["result"]["candidates"] if c["face_id"] == face)
        assert tomb["erased"]["reason"] == "data subject request 17"
        assert tomb["erased"]["erasure_id"] == report["erasure_id"]
        assert not {"image", "box", "appearances", "crop_url", "image_url"} & set(tomb)
        assert analyst.get(f"/api/faces/{face}/crop").status_code == 404
        rows = list(csv.DictReader(io.StringIO(
            analyst.get("/api/cases/ERASE-1/report", params={"format": "csv"}).text)))
        erased_rows = [r for r in rows if r["face_id"] == str(face)]
        assert len(erased_rows) == 1 and erased_rows[0]["image_sha256"] == ""
        assert "data subject request 17" in erased_rows[0]["erased"]
    for user, path in (("analyst", f"/searches/{search_id}"),
                       ("analyst", "/cases/ERASE-1/report"),
                       ("reviewer", f"/review/{search_id}")):
        with logged_in(server, user) as browser:
            page = browser.get(path)
            assert page.status_code == 200, (path, page.text[:2000])
            assert "candidate erased on" in page.text.lower(), path
            assert f"/api/faces/{face}/crop" not in page.text


def in_group_photo(found: dict[str, Any]) -> dict[str, Any]:
    """The candidate of ``found`` in the group photo kit_with_rose.jpg."""
    return next(c for c in found["result"]["candidates"]
                if any(a["location"].endswith("kit_with_rose.jpg") for a in c["appearances"]))


def region(data: bytes, box: list[int], scale: float = 1.0) -> np.ndarray:
    """The pixels of the inner half of ``box`` (scaled) in an image's bytes."""
    x, y, w, h = (v * scale for v in box)
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    return pixels[int(y + h / 4):int(y + 3 * h / 4), int(x + w / 4):int(x + 3 * w / 4)]


def test_an_opt_out_by_photo_erases_the_person_lists_and_is_removed(server: Server) -> None:
    person = "Rose_Leslie"
    found = search(server, photo(person, 1), "OPT-1")
    before = face_ids(found)
    rose, kit = in_group_photo(found), in_group_photo(search(server, photo("Kit_Harington"),
                                                             "OPT-1"))
    sha = rose["image"]["sha256"]
    group = FACES / "group" / "kit_with_rose.jpg"
    cache = server.home / "cache"
    his_crop = f"{kit['face_id']}-{sha[:16]}"
    with server.client("analyst") as analyst:
        assert analyst.get(f"/api/images/{sha}").content == group.read_bytes()
        assert analyst.get(f"/api/images/{sha}/thumb").status_code == 200  # now kept
        assert analyst.get(f"/api/faces/{kit['face_id']}/crop").status_code == 200
    assert (cache / "thumbs" / f"{sha}.jpg").exists()
    assert (cache / "crops" / f"{his_crop}.jpg").exists()
    probe = photo(person, 1)
    with server.client("admin") as admin:
        response = admin.post("/api/optouts", files=[("photos", (probe.name,
                              probe.read_bytes()))], data={"reference": "REQ-42",
                                                           "note": "by email"})
        assert response.status_code == 201, response.text
        made = response.json()
        assert made["optout"]["reference"] == "REQ-42" and made["optout"]["templates"] == 1
        erased = made["erasure"]["face_ids"]
        assert erased and set(erased) == {m["face_id"] for m in made["erasure"]["matches"]}
        assert all(m["face_id"] not in erased for m in made["erasure"]["borderline"])
        assert [o["reference"] for o in admin.get("/api/optouts").json()["optouts"]] == [
            "REQ-42"]
    after = face_ids(search(server, photo(person, 2), "OPT-2"))
    assert not set(erased) & set(after)
    assert set(erased) & set(before)
    # The group photo is shown with her face painted over; his face, and his crop, stay.
    assert rose["face_id"] in erased and kit["face_id"] not in erased
    with server.client("analyst") as analyst:
        shown = analyst.get(f"/api/images/{sha}")
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
        assert not list((cache / "thumbs").glob(f"{sha}*"))  # deleted by the erasure
        assert not list((cache / "crops").glob(f"{his_crop}*"))  # his margin may show her
        thumb = analyst.get(f"/api/images/{sha}/thumb").content
        assert analyst.get(f"/api/faces/{kit['face_id']}/crop").status_code == 200
    # Kept again under names that say what is painted over in them.
    (kept_thumb,) = (cache / "thumbs").glob(f"{sha}*")
    (kept_crop,) = (cache / "crops").glob(f"{his_crop}*")
    assert kept_thumb.name.startswith(f"{sha}-m") and kept_crop.name.startswith(f"{his_crop}-m")
    with Image.open(group) as original:
        scale = 320 / max(original.size)
    for data, factor in ((shown.content, 1.0), (thumb, scale)):
        hidden, seen = region(data, rose["box"], factor), region(data, kit["box"], factor)
        assert abs(hidden.mean() - 128) < 3 and hidden.std() < 3, (hidden.mean(), hidden.std())
        assert seen.std() > 15
    with server.client("admin") as admin:
        removed = admin.delete("/api/optouts/REQ-42")
        assert removed.status_code == 200 and removed.json()["removed"]
        assert admin.get("/api/optouts").json()["optouts"] == []
        assert admin.delete("/api/optouts/REQ-42").status_code == 404


def test_erasure_by_photo_reports_matches_and_borderline(server: Server) -> None:
    probe = photo("Mick_Jagger", 1)
    with server.client("admin") as admin:
        response = admin.post("/api/erasures/photos", files=[("photos", (probe.name,
                              probe.read_bytes()))], data={"reason": "request 9"})
        assert response.status_code == 200, response.text
        report = response.json()["erasure"]
    assert report["kind"] == "photo" and report["matches"]
    assert sorted(report["face_ids"]) == sorted(m["face_id"] for m in report["matches"])
    assert all(m["score"] >= n["score"] for m in report["matches"] for n in report["borderline"])


def wait_for_job(admin: httpx.Client, job_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job: dict[str, Any] = admin.get(f"/api/jobs/{job_id}").json()["job"]
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def test_removing_a_source_erases_what_only_it_reached(server: Server, tmp_path: Path) -> None:
    folder = tmp_path / "extra"
    folder.mkdir()
    for n, person in enumerate(("Oprah_Winfrey", "Yoko_Ono")):  # new bytes: new images
        (folder / f"{n}.jpg").write_bytes(photo(person).read_bytes() + b"extra")
    with server.client("admin") as admin:
        assert admin.post("/api/sources", json={
            "name": "extra", "kind": "folder", "uri": str(folder), "lawful_basis": "tests",
            "purpose": "tests", "retention_days": 30}).status_code == 201
        job = admin.post("/api/jobs", json={"source": "extra"}).json()["job"]
        assert wait_for_job(admin, job["id"])["status"] == "completed"
        response = admin.request("DELETE", "/api/sources/extra",
                                 json={"reason": "licence ended"})
        assert response.status_code == 200, response.text
        report = response.json()["erasure"]
        assert report["kind"] == "source" and report["counts"]["images"] == 2
        assert "extra" not in [s["name"] for s in admin.get("/api/sources").json()["sources"]]
        assert admin.request("DELETE", "/api/sources/extra",
                             params={"reason": "again"}).status_code == 404
    found = search(server, photo("Oprah_Winfrey"), "SRC")
    assert all(a["source"] != "extra" for c in found["result"]["candidates"]
               for a in c["appearances"])


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def test_the_rights_page_previews_then_erases(server: Server) -> None:
    face = search(server, photo("Gwyneth_Paltrow"), "PAGE")["result"]["candidates"][0]["face_id"]
    with logged_in(server, "north_admin") as north:
        assert north.get("/rights").status_code == 403
        assert 'href="/rights"' not in north.get("/sources").text
    with logged_in(server, "admin") as browser:
        page = browser.get("/rights")
        assert page.status_code == 200 and 'href="/rights"' in page.text
        token = CSRF_FIELD.findall(page.text)[-1]
        form = {"csrf_token": token, "what": "face", "target": str(face),
                "reason": "page request"}
        preview = browser.post("/rights/erase", data=form)
        assert preview.status_code == 200, preview.text
        assert f'src="/api/faces/{face}/crop"' in preview.text
        assert browser.get(f"/api/faces/{face}/crop").status_code == 200  # not yet erased
        done = browser.post("/rights/erase", data={**form, "confirm": "yes"})
        assert done.status_code == 200 and "Erasure #" in done.text
        assert browser.get(f"/api/faces/{face}/crop").status_code == 404
        missing = browser.post("/rights/erase", data={**form, "reason": ""})
        assert missing.status_code == 422 and "reason" in missing.text
        swept = browser.post("/rights/sweep", data={"csrf_token": token, "as_of": "2000-01-01"})
        assert swept.status_code == 200 and 'data-testid="sweep"' in swept.text


def test_a_sweep_as_of_the_future_erases_what_expired(server: Server) -> None:
    """Runs last: the gallery's source keeps 30 days, so in 60 days all of it has expired."""
    later = (datetime.now(UTC) + timedelta(days=60)).date().isoformat()
    search(server, photo("Jennifer_Aniston"), "SWEEP")
    with server.client("admin") as admin:
        preview = admin.post("/api/retention/sweep", json={"as_of": later, "dry_run": True})
        assert preview.status_code == 200, preview.text
        expiring = {s["source"]: s for s in preview.json()["sweep"]["sources"]}
        assert expiring["people"]["counts"]["appearances"] > 0
        assert preview.json()["sweep"]["searches"] >= 1
        assert search(server, photo("Jennifer_Aniston"), "SWEEP")["result"]["candidates"]
        swept = admin.post("/api/retention/sweep", json={"as_of": later}).json()["sweep"]
        assert not swept["dry_run"] and swept["as_of"].startswith(later)
        assert [e["target"] for e in swept["erasures"]] == ["people"]
        assert swept["searches"] >= 1
        kinds = [e["kind"] for e in admin.get("/api/erasures").json()["erasures"]]
        assert kinds[0] == "retention"
    with server.client("analyst") as analyst:
        left = analyst.post("/api/searches/upload", files={"file": (
            "p.jpg", photo("Jennifer_Aniston").read_bytes())}, data={"case_ref": "SWEEP",
                                                                     "purpose": "after"})
        assert left.status_code == 409 or left.json()["result"]["candidates"] == [], left.text


@contextmanager
def logged_in(server: Server, user: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as browser:
        response = browser.post("/login", data={"token": server.tokens[user],
                                                "csrf_token": login_form_token(browser)})
        assert response.status_code == 303, response.text
        yield browser


def test_serve_sweeps_on_its_schedule(gallery_home: Path, tmp_path: Path) -> None:
    """A server sweeps every FACETRAIL_SWEEP_MINUTES, as its own actor, once per period
    (the store remembers the last sweep), and the sweep is audited."""
    home = tmp_path / "home"
    copy_home(gallery_home, home)
    server = Server(home, add_users(home), env={"FACETRAIL_SWEEP_MINUTES": "0.01"}).start()
    try:
        deadline = time.monotonic() + 60
        sweeps: list[AuditRow] = []
        while time.monotonic() < deadline and len(sweeps) < 2:
            time.sleep(0.5)
            store = open_store(store_url_of(home))
            try:
                sweeps = store.audit_rows(AuditQuery(action="retention.sweep"))
                last = store.setting(LAST_SWEEP)
            finally:
                store.close()
    finally:
        server.stop()
    assert len(sweeps) >= 2, (home.parent / f"server-{server.port}.log").read_text()
    assert {s.event.actor for s in sweeps} == {SWEEP_ACTOR}
    assert all(s.event.details["dry_run"] is False for s in sweeps)
    assert last is not None and last >= sweeps[-1].event.details["as_of"][:19]
