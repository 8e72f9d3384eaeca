"""The rights of the people in the photos, through the engine and the CLI, on real photos:
erasure with tombstones, source removal, opt-out with suppression, retention sweeps."""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import facetrail
from conftest import FACES, PEOPLE, cli_json, run_cli
from facetrail.accounts import Actor
from facetrail.engine import Facetrail
from facetrail.errors import NotFoundError, PolicyError
from facetrail.store import AuditQuery, EraseSelector
from stores import own_store, raw_sql, store_url_of

PEOPLE_HERE = ("Barack_Obama", "Angelina_Jolie", "Ashanti")
CASE = {"case_ref": "2026-0417", "purpose": "robbery investigation"}


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for name in PEOPLE_HERE:
        shutil.copytree(PEOPLE / name, root / name)
    return root


@pytest.fixture
def engine(tmp_path: Path, photos: Path) -> facetrail.Facetrail:
    home = tmp_path / "home"  # its store: the test's own (FACETRAIL_STORE_URL, or home's)
    with facetrail.open(home, workers=1) as ft:
        ft.add_source("photos", "folder", photos, lawful_basis="test fixtures",
                      purpose="testing", retention_days=30)
        ft.ingest("photos")
        yield ft


def person_of(engine: Facetrail, face_id: int) -> str:
    row = engine.face(face_id)
    return Path(row.appearances[0].location).parent.name


def faces_of(engine: Facetrail, name: str) -> list[int]:
    return sorted(f for f in stored_faces(engine) if person_of(engine, f) == name)


def stored_faces(engine: Facetrail) -> set[int]:
    return {int(i) for ids, _ in engine.store.iter_embeddings(engine.model_id) for i in ids}


def held(engine: Facetrail) -> set[int]:
    """Face ids the index returns for a search of everything."""
    probe = np.zeros((1, engine.model.dim), np.float32)
    _, ids = engine.index.search(probe, max(engine.index.size, 1))
    return {int(i) for i in ids[0] if i >= 0}


def events(engine: Facetrail, action: str) -> list[dict[str, object]]:
    return [e.event.details for e in engine.audit_events(AuditQuery(action=action))]


def test_erasing_a_face_leaves_a_tombstone_in_kept_results(engine: Facetrail) -> None:
    probe = (PEOPLE / "Barack_Obama" / "Barack_Obama_0001.jpg").read_bytes()
    kept = engine.search_probes([probe], **CASE)
    found = [c.face_id for c in kept.result.candidates]
    victim = found[1]
    before = len(stored_faces(engine))
    dry = engine.erase_faces([victim], reason="subject's request", dry_run=True)
    assert dry.counts == {"faces": 1, "images": 0, "appearances": 0, "searches": 1}
    assert dry.erasure_id is None and victim in stored_faces(engine) and victim in held(engine)

    report = engine.erase_faces([victim], reason="subject's request")
    assert report.erasure_id is not None and report.index_removed == 1
    assert victim not in stored_faces(engine) and victim not in held(engine)
    assert len(stored_faces(engine)) == before - 1
    with pytest.raises(NotFoundError):
        engine.face(victim)
    again = engine.search(probe, **CASE)
    assert victim not in [c.face_id for c in again.candidates]
    # The kept search keeps the candidate's place, rank and score, and nothing of the face.
    result = engine.search_record(kept.record.id).search.result
    (tomb,) = [c for c in result["candidates"] if c["face_id"] == victim]
    assert tomb["erased"]["reason"] == "subject's request" and tomb["erased"]["kind"] == "face"
    assert "image" not in tomb and "box" not in tomb and "appearances" not in tomb
    assert [c["face_id"] for c in result["candidates"]] == found
    assert engine.tombstones([victim])[victim].reason == "subject's request"
    # An erased candidate is no longer waiting for a review.
    assert engine.search_record(kept.record.id).search.pending == len(found) - 1
    (event,) = events(engine, "erase")
    assert event["face_ids"] == [victim] and event["reason"] == "subject's request"
    assert engine.verify_audit().ok
    with pytest.raises(NotFoundError):
        engine.erase_faces([victim], reason="twice")


def test_an_erased_image_is_never_ingested_again(engine: Facetrail, photos: Path) -> None:
    photo = photos / "Ashanti" / "Ashanti_0001.jpg"
    sha = __import__("hashlib").sha256(photo.read_bytes()).hexdigest()
    faces = len(stored_faces(engine))
    report = engine.erase_image(sha, reason="court order 17")
    assert report.counts["images"] == 1 and report.counts["appearances"] == 1
    assert len(stored_faces(engine)) == faces - report.counts["faces"]
    assert engine.store.image_appearances(sha) == []
    again = engine.ingest("photos")
    assert again.suppressed == 1 and again.images_new == 0
    assert engine.store.image_appearances(sha) == []
    copy = photos / "elsewhere.jpg"
    shutil.copy(photo, copy)
    assert engine.ingest("photos").suppressed == 2  # the file where it was, and its copy
    with pytest.raises(NotFoundError):
        engine.erase_image(sha, reason="again")


def test_removing_a_source_keeps_what_another_source_reached(
    engine: Facetrail, photos: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    shared = photos / "Ashanti" / "Ashanti_0002.jpg"
    shutil.copy(shared, other / "copy.jpg")
    engine.add_source("other", "folder", other, lawful_basis="test", purpose="testing",
                      retention_days=10)
    engine.ingest("other")
    sha = __import__("hashlib").sha256(shared.read_bytes()).hexdigest()
    images = engine.stats().store.images
    report = engine.remove_source("photos", reason="collection withdrawn")
    assert report.counts["images"] == images - 1
    assert [a.source for a in engine.store.image_appearances(sha)] == ["other"]
    assert [s.name for s in engine.sources()] == ["other"]
    assert len(stored_faces(engine)) == len(engine.store.faces(sorted(stored_faces(engine))))
    assert all(person_of(engine, f) == "other" or True for f in stored_faces(engine))
    assert stored_faces(engine) == held(engine)
    with pytest.raises(NotFoundError):
        engine.source("photos")


def test_an_opt_out_erases_suppresses_and_filters(engine: Facetrail, photos: Path) -> None:
    selfie = photos / "Barack_Obama" / "Barack_Obama_0001.jpg"
    obama = faces_of(engine, "Barack_Obama")
    others = set(stored_faces(engine)) - set(obama)
    dry = engine.add_optout([selfie], reference="REQ-123", dry_run=True)
    assert dry.optout is None and {m.face_id for m in dry.erasure.matches} == set(obama)
    assert engine.optouts() == [] and set(obama) <= stored_faces(engine)

    report = engine.add_optout([selfie], reference="REQ-123", note="by email")
    assert report.optout is not None and report.optout.templates == 1
    assert stored_faces(engine) == others and held(engine) == others
    (listed,) = engine.optouts()
    assert (listed.reference, listed.note, listed.photos) == ("REQ-123", "by email", 1)
    # The photos were not kept, only their hash and template.
    added = events(engine, "optout.add")[0]
    assert added["photo_sha256s"] == [__import__("hashlib").sha256(selfie.read_bytes())
                                      .hexdigest()]
    # A new photo of the person is suppressed at ingest, counted, not stored.
    with Image.open(PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg") as image:
        ImageOps.mirror(image).save(photos / "new.jpg", quality=90)  # new bytes, same person
    report_in = engine.ingest("photos")
    assert (report_in.images_new, report_in.suppressed, report_in.faces) == (1, 1, 0)
    assert stored_faces(engine) == others
    # In a new group photo, he is left out and painted over wherever it is shown; Biden stays.
    with Image.open(FACES / "group" / "two_people.jpg") as image:
        image.save(photos / "group.png")
    group = (photos / "group.png").read_bytes()
    report_in = engine.ingest("photos")
    assert (report_in.images_new, report_in.suppressed, report_in.faces) == (1, 1, 1)
    sha = __import__("hashlib").sha256(group).hexdigest()
    (x, y, w, h), = engine.store.erased_boxes(sha)
    shown = engine.image_bytes(sha)
    with Image.open(io.BytesIO(shown)) as image:
        assert image.format == "PNG"
        painted = np.asarray(image)[y:y + h, x:x + w]
    with Image.open(io.BytesIO(group)) as image:
        before = np.asarray(image.convert("RGB"))
    assert (painted == 128).all() and (before[y:y + h, x:x + w] != 128).any()
    (biden,) = set(stored_faces(engine)) - others
    bx, by, bw, bh = engine.face(biden).box
    with Image.open(io.BytesIO(shown)) as image:
        assert (np.asarray(image)[by:by + bh, bx:bx + bw] == before[by:by + bh, bx:bx + bw]).all()
    others.add(biden)
    with pytest.raises(Exception, match="REQ-123"):
        engine.add_optout([selfie], reference="REQ-123")
    engine.remove_optout("REQ-123")
    assert engine.optouts() == []


def test_search_leaves_out_faces_an_opt_out_made_elsewhere_matches(engine: Facetrail) -> None:
    """An opt-out recorded by another machine, whose erasure has not reached this index yet:
    the search checks candidates against the templates itself."""
    selfie = (PEOPLE / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg").read_bytes()
    jolie = set(faces_of(engine, "Angelina_Jolie"))
    matching = {m.face_id for m in engine.erase_photos([selfie], reason="-", dry_run=True).matches}
    assert matching and matching <= jolie
    assert matching <= {c.face_id for c in engine.search(selfie, **CASE).candidates}
    template = engine.analyzer(selfie, "selfie", embed=(0,)).faces[0].embedding
    engine.store.add_optout("REQ-9", "", 1, "elsewhere", 1,
                            [(engine.model_id, "ab" * 32, template)])
    assert matching <= stored_faces(engine) and matching <= held(engine)
    found = {c.face_id for c in engine.search(selfie, **CASE, threshold=0.0).candidates}
    assert found and not found & matching


def test_erasing_by_photo_reports_borderline_faces_and_takes_a_threshold(
    engine: Facetrail,
) -> None:
    selfie = PEOPLE / "Ashanti" / "Ashanti_0003.jpg"
    strict = engine.erase_photos([selfie], reason="r", threshold=0.95, dry_run=True)
    loose = engine.erase_photos([selfie], reason="r", threshold=0.5, dry_run=True)
    assert len(strict.matches) < len(loose.matches)
    assert all(m.score >= 0.95 for m in strict.matches)
    assert all(0.85 <= m.score < 0.95 for m in strict.borderline)
    assert {person_of(engine, m.face_id) for m in loose.matches} == {"Ashanti"}
    done = engine.erase_photos([selfie], reason="r", threshold=0.5)
    assert set(done.faces) == {m.face_id for m in loose.matches}
    assert not set(done.faces) & stored_faces(engine)


def test_retention_sweep_expires_sources_probes_and_kept_searches(engine: Facetrail) -> None:
    probe = (PEOPLE / "Ashanti" / "Ashanti_0001.jpg").read_bytes()
    kept = engine.search_probes([probe], **CASE)
    url = store_url_of(engine.home)
    engine.add_source("legacy", "folder", PEOPLE / "Ashanti", lawful_basis="old",
                      purpose="old", retention_days=1)
    raw_sql(url, "UPDATE sources SET retention_days = NULL WHERE name = 'legacy'")
    faces = len(stored_faces(engine))

    now = engine.sweep(dry_run=True)
    assert [e.source for e in now.sources if e.retention_days is None] == ["legacy"]
    assert (now.probes, now.searches, now.erasures) == (0, 0, ())
    later = datetime.now(UTC) + timedelta(days=8)
    dry = engine.sweep(as_of=later, dry_run=True)
    assert (dry.probes, dry.searches) == (1, 1)
    assert len(stored_faces(engine)) == faces and engine.searches()

    swept = engine.sweep(as_of=later)
    assert (swept.probes, swept.searches) == (1, 1)
    assert engine.searches() == [] and len(stored_faces(engine)) == faces
    assert not list((engine.home / "probes").rglob(kept.record.probe_sha256))
    with pytest.raises(NotFoundError):
        engine.probe_bytes(kept.record.probe_sha256)

    expired = engine.sweep(as_of=datetime.now(UTC) + timedelta(days=31))
    (source,) = [e for e in expired.sources if e.source == "photos"]
    assert source.counts["faces"] == faces and stored_faces(engine) == set()
    assert engine.index.size == 0
    sweeps = events(engine, "retention.sweep")
    assert [s["dry_run"] for s in sweeps] == [True, True, False, False]
    assert sweeps[-1]["no_retention"] == ["legacy"]
    assert engine.verify_audit().ok
    # Expired, not erased by name: a new ingest is a new holding.
    assert engine.ingest("photos").faces == faces


def test_only_the_deployment_carries_out_rights(engine: Facetrail) -> None:
    engine.add_org("north")
    outsider = Actor("north-admin", org="north", org_id=engine.store.get_org("north").id,
                     role="admin", user_id=None)
    analyst = Actor("ann", role="analyst")
    face = min(stored_faces(engine))
    for actor in (outsider, analyst):
        with pytest.raises(PolicyError):
            engine.erase_faces([face], reason="r", actor=actor)
        with pytest.raises(PolicyError):
            engine.sweep(actor=actor)
        with pytest.raises(PolicyError):
            engine.optouts(actor=actor)
    assert face in stored_faces(engine)
    with pytest.raises(PolicyError):
        engine.erase_faces([face], reason=" ")


def test_the_cli_erases_opts_out_and_sweeps(tmp_path: Path, photos: Path) -> None:
    home = tmp_path / "cli"
    own_store(home)
    refused = run_cli(home, "sources", "add", "p", "--kind", "folder", "--uri", str(photos),
                      "--lawful-basis", "t", "--purpose", "t", check=False)
    assert refused.returncode != 0 and "--retention-days" in refused.stderr
    run_cli(home, "sources", "add", "p", "--kind", "folder", "--uri", str(photos),
            "--lawful-basis", "t", "--purpose", "t", "--retention-days", "30")
    run_cli(home, "ingest", "p")
    selfie = str(PEOPLE / "Angelina_Jolie" / "Angelina_Jolie_0002.jpg")
    dry = cli_json(home, "optout", "add", selfie, "--reference", "REQ-1", "--dry-run")
    assert isinstance(dry, dict) and dry["optout"] is None and dry["erasure"]["dry_run"]
    matched = dry["erasure"]["counts"]["faces"]
    assert matched >= 5
    done = cli_json(home, "optout", "add", selfie, "--reference", "REQ-1", "--note", "mail")
    assert isinstance(done, dict) and done["erasure"]["counts"]["faces"] == matched
    listed = cli_json(home, "optout", "list")
    assert isinstance(listed, list) and [o["reference"] for o in listed] == ["REQ-1"]
    found = cli_json(home, "search", str(PEOPLE / "Ashanti" / "Ashanti_0001.jpg"),
                     "--case", "C-1", "--purpose", "test")
    assert isinstance(found, dict)
    face = str(found["candidates"][0]["face_id"])
    text = run_cli(home, "erase", "--face", face, "--reason", "asked", "--dry-run").stdout
    assert "dry run: would erase 1 face(s)" in text and "1 kept search(es)" in text
    bad = run_cli(home, "erase", "--face", face, "--image", "ab", "--reason", "x", check=False)
    assert bad.returncode != 0 and "exactly one" in bad.stderr
    gone = cli_json(home, "erase", "--face", face, "--reason", "asked")
    assert isinstance(gone, dict) and gone["face_ids"] == [int(face)] and gone["erasure_id"]
    missing = run_cli(home, "erase", "--face", face, "--reason", "asked", check=False)
    assert missing.returncode != 0 and f"no face {face}" in missing.stderr
    sweep = cli_json(home, "retention", "sweep", "--as-of", "2099-01-01", "--dry-run")
    assert isinstance(sweep, dict) and sweep["sources"][0]["counts"]["images"] > 0
    run_cli(home, "optout", "remove", "REQ-1")
    removed = cli_json(home, "sources", "remove", "p", "--reason", "withdrawn")
    assert isinstance(removed, dict) and removed["kind"] == "source"
    assert cli_json(home, "sources", "list") == []
    verify = cli_json(home, "audit", "verify")
    assert isinstance(verify, dict) and verify["ok"]
    exported = run_cli(home, "audit", "export").stdout
    actions = [json.loads(line)["action"] for line in exported.splitlines() if line.strip()]
    assert actions.count("erase") == 3 and "optout.remove" in actions


def test_erasure_reaches_the_index_of_another_face_model(engine: Facetrail, photos: Path) -> None:
    """A gallery analysed by two models (reembed) has two indexes: an erased face leaves the
    files of both, not only the store."""
    engine.reembed("dlib")
    dlib_id = engine.store.model_id(engine.face_model("dlib").model)
    photo = photos / "Angelina_Jolie" / "Angelina_Jolie_0002.jpg"
    sha = __import__("hashlib").sha256(photo.read_bytes()).hexdigest()
    scope = engine.store.erasure_scope(EraseSelector(sha256s=(sha,)))
    vectors = [v.astype("<f4").tobytes() for v in engine.store.embeddings(scope.faces).values()]
    dlib_faces = {int(i) for ids, _ in engine.store.iter_embeddings(dlib_id) for i in ids}
    assert len(vectors) >= 2 and set(scope.faces) & dlib_faces

    def in_index_files() -> int:
        files = [f.read_bytes() for f in (engine.home / "index").rglob("*") if f.is_file()]
        return sum(v in data for v in vectors for data in files)

    engine.index.sync()  # the active model's index, saved
    assert in_index_files() >= 2  # each model's flat index holds vectors of the image
    engine.erase_image(sha, reason="court order")
    assert in_index_files() == 0
