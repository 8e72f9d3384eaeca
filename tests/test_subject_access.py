"""Subject access: what facetrail holds about a person, found by another photo of them.

A small folder of three people (and a photo of two people) is ingested, searched a few times,
and then a subject access request is made with a photo of one of them that was never ingested
or searched. Identities come from the file names.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import facetrail
from conftest import FACES, PEOPLE, identity_of, run_cli
from facetrail.accounts import Actor
from facetrail.engine import Facetrail
from facetrail.errors import ForbiddenError, NotFoundError
from facetrail.imaging import CROP_MARGIN, sha256_hex
from facetrail.subject_access import SCHEMA, report_json
from stores import copy_home, own_store, store_url_of
from webserver import Server, add_users, login_form_token

PERSON = "Joseph_Biden"
OTHERS = ("Angelina_Jolie", "Gwyneth_Paltrow")
PROBE = PEOPLE / PERSON / f"{PERSON}_0001.jpg"
"""Searched, never ingested."""
REQUEST = PEOPLE / PERSON / f"{PERSON}_0102.jpg"
"""The requester's photo: never ingested, never searched."""
GROUP = FACES / "group" / "two_people.jpg"
"""Barack Obama and Joseph Biden."""
SEARCHES = (  # (probe, case, purpose)
    (PROBE, "C-1", "robbery"),
    (PROBE, "C-2", "fraud"),
    (PEOPLE / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg", "C-3", "other person"),
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding the folder, searched as SEARCHES says; the candidates of each
    search are kept in ``searches.json`` next to it."""
    root = tmp_path_factory.mktemp("sar")
    folder = root / "photos"
    for name in (PERSON, *OTHERS):
        target = folder / "people" / name
        target.mkdir(parents=True)
        for photo in sorted((PEOPLE / name).glob("*.jpg")):
            if photo not in (PROBE, REQUEST) and not photo.name.endswith("_0001.jpg"):
                shutil.copy(photo, target / photo.name)
    shutil.copy(GROUP, folder / GROUP.name)
    home = root / "home"
    home.mkdir()
    own_store(home)
    with facetrail.open(home, workers=1, store_url=store_url_of(home)) as engine:
        engine.add_source("photos", "folder", folder, lawful_basis="consent of the pictured",
                          purpose="test gallery", retention_days=90)
        engine.ingest("photos")
        made = []
        for probe, case, purpose in SEARCHES:
            kept = engine.search_probes([probe.read_bytes()], case_ref=case, purpose=purpose)
            made.append({"case": case, "purpose": purpose,
                         "faces": [c.face_id for c in kept.result.candidates]})
    (root / "searches.json").write_text(json.dumps(made))
    return home


@pytest.fixture
def engine(built: Path, tmp_path: Path) -> Iterator[Facetrail]:
    home = tmp_path / "home"
    copy_home(built, home)
    with facetrail.open(home, workers=1, store_url=store_url_of(home)) as opened:
        yield opened


def searches_made(built: Path) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = json.loads((built.parent / "searches.json").read_text())
    return made


def located(engine: Facetrail) -> dict[int, tuple[str, int]]:
    """face id -> (location, ordinal) of every face held."""
    return {f.face_id: (f.location, f.ordinal)
            for f in engine.store.source_faces("photos", engine.model_id)}


def test_the_report_lists_exactly_the_persons_faces(engine: Facetrail, built: Path) -> None:
    report = engine.subject_access([REQUEST], reference="SAR-9")
    faces = located(engine)
    found = {f.face_id for f in report.faces}
    assert found, "no face matched"
    for face_id in found:
        assert PERSON in identity_of(faces[face_id][0]), faces[face_id]
    # Every photo of the person in the folder: its largest face; the group photo: one face.
    expected = {i for i, (loc, ordinal) in faces.items()
                if Path(loc).parent.name == PERSON and ordinal == 0}
    assert expected <= found
    in_group = [i for i in found if Path(faces[i][0]).name == GROUP.name]
    assert len(in_group) == 1
    assert found == expected | set(in_group)
    assert [f.score for f in report.faces] == sorted((f.score for f in report.faces),
                                                     reverse=True)
    assert all(f.score >= report.threshold for f in report.faces)
    assert report.threshold == engine.optout_threshold


def test_each_crop_is_its_face_only(engine: Facetrail) -> None:
    report = engine.subject_access([REQUEST], reference="SAR-9")
    for f in report.faces:
        assert f.crop is not None, f.crop_problem
        crop = Image.open(io.BytesIO(f.crop))
        width, height = f.image.width, f.image.height
        x, y, w, h = f.box
        mx, my = int(w * CROP_MARGIN), int(h * CROP_MARGIN)
        region = (min(width, x + w + mx) - max(0, x - mx), min(height, y + h + my) - max(0, y - my))
        assert crop.width * crop.height < width * height
        assert region[0] * region[1] < width * height  # not the whole image
        # The crop is the face's region (scaled down), not the image scaled down.
        assert abs(crop.width / crop.height - region[0] / region[1]) < 0.05
        assert crop.width <= region[0] and crop.height <= region[1]
    group = [f for f in report.faces if any(a.appearance.location.endswith(GROUP.name)
                                            for a in f.image.appearances)]
    assert len(group) == 1
    assert group[0].box[2] * 2 < group[0].image.width  # one of the two faces side by side


def test_images_appearances_and_sources_are_reported(engine: Facetrail) -> None:
    report = engine.subject_access([REQUEST], reference="SAR-9")
    doc = report_json(report)
    assert doc["schema"] == SCHEMA
    today = datetime.now(UTC).date().isoformat()
    for face in doc["faces"]:
        image = face["image"]
        assert re.fullmatch("[0-9a-f]{64}", image["sha256"])
        assert image["bytes"] > 0 and image["width"] > 0 and image["height"] > 0
        assert image["ingested_at"].startswith(today)
        assert face["appearances"], face
        for a in face["appearances"]:
            assert a["source"] == "photos"
            assert Path(a["location"]).exists()
            assert a["recorded_at"].startswith(today)
            assert a["gone_at"] is None
            assert "source_url" in a and "page_urls" in a and "captured_at" in a
        assert face["crop"].startswith("data:image/jpeg;base64,")
    assert doc["sources"] == [{
        "name": "photos", "kind": "folder", "lawful_basis": "consent of the pictured",
        "purpose": "test gallery", "retention_days": 90, "org": "default", "shared_with": [],
    }]
    assert "may include faces of other people" in doc["note"]
    assert f"{report.threshold:g}" in doc["note"]
    accuracy = doc["accuracy"]
    assert accuracy["measured"] and 0 <= accuracy["miss_rate"] < 0.2
    assert "%" in accuracy["text"] and accuracy["gallery_faces"] == engine.index.size


def test_search_counts_match_the_searches_made(engine: Facetrail, built: Path) -> None:
    made = searches_made(built)
    report = engine.subject_access([REQUEST], reference="SAR-9")
    today = datetime.now(UTC).date().isoformat()
    for face in report_json(report)["faces"]:
        returned_by = [s for s in made if face["face_id"] in s["faces"]]
        assert face["searches"]["count"] == len(returned_by)
        assert face["searches"]["dates"] == ([today] if returned_by else [])
        assert "cases" not in face["searches"]
    # The person's searches returned some of these faces, twice each.
    assert any(f["searches"]["count"] == 2 for f in report_json(report)["faces"])
    assert report.counts()["searches"] == 2


def test_case_references_only_with_the_flag(engine: Facetrail, built: Path) -> None:
    hidden = json.dumps(report_json(engine.subject_access([REQUEST], reference="SAR-9")))
    for case, purpose in (("C-1", "robbery"), ("C-2", "fraud")):
        assert case not in hidden and purpose not in hidden
    shown = report_json(engine.subject_access([REQUEST], reference="SAR-9",
                                              include_cases=True))
    made = searches_made(built)
    for face in shown["faces"]:
        expected = [(s["case"], s["purpose"]) for s in made if face["face_id"] in s["faces"]]
        assert [(c["case_ref"], c["purpose"]) for c in face["searches"]["cases"]] == expected
    assert {c["case_ref"] for f in shown["faces"] for c in f["searches"]["cases"]} == {
        "C-1", "C-2"}


def test_audited_without_biometric_data_and_photos_not_kept(engine: Facetrail) -> None:
    probes_before = sorted(p.name for p in (engine.home / "probes").rglob("*") if p.is_file())
    report = engine.subject_access([REQUEST], reference="SAR-9")
    sha = sha256_hex(REQUEST.read_bytes())
    with pytest.raises(NotFoundError):
        engine.store.get_probe(sha)
    assert sorted(p.name for p in (engine.home / "probes").rglob("*")
                  if p.is_file()) == probes_before
    event = engine.audit_events()[-1].event
    assert event.action == "subject_access"
    assert report.audit_id == engine.audit_events()[-1].id
    details = event.details
    assert details["reference"] == "SAR-9" and details["photo_sha256s"] == [sha]
    assert details["faces"] == len(report.faces) and details["searches"] == 2
    assert set(details["face_ids"]) == {f.face_id for f in report.faces}
    # No vector, pixels or crop: only short strings, integers, the threshold and flags.
    text = json.dumps(details)
    assert "base64" not in text and len(text) < 2000
    floats = [v for v in details.values() if isinstance(v, float)]
    assert floats == [report.threshold]
    assert engine.verify_audit().ok


def test_only_the_deployments_admins(engine: Facetrail) -> None:
    engine.add_org("agency")
    for actor in (engine.actor("alice", org="agency"),
                  Actor("bob", 5, role="analyst")):
        with pytest.raises(ForbiddenError):
            engine.subject_access([REQUEST], reference="SAR-9", actor=actor)
    assert all(r.event.action != "subject_access" for r in engine.audit_events())


def test_the_cli_writes_a_self_contained_report(built: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    copy_home(built, home)
    out = tmp_path / "report"
    proc = run_cli(home, "subject-access", str(REQUEST), "--reference", "SAR-9", "--out",
                   str(out), "--json")
    summary = json.loads(proc.stdout)
    doc = json.loads((out / "report.json").read_text())
    assert doc["schema"] == SCHEMA and doc["reference"] == "SAR-9"
    assert summary["faces"] == len(doc["faces"]) > 0
    for face in doc["faces"]:
        assert (out / face["crop"]).is_file()
        assert "cases" not in face["searches"]
    page = (out / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/jpeg;base64,") for s in sources)
    assert "<link" not in page and "<script" not in page and "url(" not in page
    for face in doc["faces"]:
        assert face["image"]["sha256"] in page
    assert "SAR-9" in page and doc["accuracy"]["text"].split(":")[0] in page
    with_cases = json.loads(run_cli(home, "subject-access", str(REQUEST), "--reference",
                                    "SAR-9", "--out", str(tmp_path / "r2"),
                                    "--include-cases", "--json").stdout)
    assert with_cases["searches"] == 2
    assert "C-1" in (tmp_path / "r2" / "index.html").read_text()
    failed = run_cli(home, "subject-access", str(FACES / "noface" / next(
        p.name for p in (FACES / "noface").iterdir())), "--reference", "SAR-9", "--out",
        str(tmp_path / "r3"), check=False)
    assert failed.returncode == 2 and "no_face" in failed.stderr


@pytest.fixture(scope="module")
def server(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("sar-api") / "home"
    copy_home(built, home)
    running = Server(home, add_users(home)).start()
    try:
        yield running
    finally:
        running.stop()


def files(*photos: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]


def test_the_api_answers_admins_only(server: Server, built: Path) -> None:
    with server.client("admin") as admin:
        response = admin.post("/api/subject-access", files=files(REQUEST),
                              data={"reference": "SAR-9", "include_cases": "true"})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["schema"] == SCHEMA and doc["include_cases"] is True
    assert doc["faces"] and all(f["crop"].startswith("data:image/jpeg") for f in doc["faces"])
    assert {c["case_ref"] for f in doc["faces"] for c in f["searches"]["cases"]} == {
        "C-1", "C-2"}
    for user in ("analyst", "reviewer", "auditor"):
        with server.client(user) as other:
            refused = other.post("/api/subject-access", files=files(REQUEST),
                                 data={"reference": "SAR-9"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    with server.client("admin") as admin:
        missing = admin.post("/api/subject-access", files=files(REQUEST), data={})
    assert missing.status_code == 422


def test_the_page_shows_the_report_to_admins(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=120) as browser:
        assert browser.post("/login", data={"token": server.tokens["admin"],
                                            "csrf_token": login_form_token(browser)}
                            ).status_code == 303
        form = browser.get("/subject-access")
        assert form.status_code == 200 and 'name="photos"' in form.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf is not None
        page = browser.post("/subject-access", files=files(REQUEST),
                            data={"reference": "SAR-9", "csrf_token": csrf.group(1)})
    assert page.status_code == 200, page.text
    assert page.text.count('data-testid="sar-face"') > 0
    assert 'src="data:image/jpeg;base64,' in page.text
    assert "img-src 'self' data:" in page.headers["content-security-policy"]
    assert "C-1" not in page.text
    with httpx.Client(base_url=server.url, timeout=120) as browser:
        browser.post("/login", data={"token": server.tokens["analyst"],
                                     "csrf_token": login_form_token(browser)})
        assert browser.get("/subject-access").status_code == 403
