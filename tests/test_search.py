"""Search over the fixture gallery: accuracy, open-set probes, options, JSON and audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import FACES, PEOPLE, cli_json, identity_of, run_cli
from facetrail.engine import Facetrail
from facetrail.errors import InputError, NoFaceError, PolicyError
from facetrail.imaging import sha256_hex
from facetrail.store import AuditQuery, open_store
from stores import store_url_of

CASE = {"case_ref": "T-1", "purpose": "test"}


def test_each_identity_found_at_rank_1_from_another_photo(gallery: Facetrail) -> None:
    searches = hits = 0
    misses = []
    for photo in sorted(PEOPLE.glob("*/*")):
        data = photo.read_bytes()
        try:
            result = gallery.search(data, top=5, threshold=-10.0, **CASE)
        except NoFaceError:
            continue  # counted by the face-count tests, not a search
        others = [c for c in result.candidates if c.image.sha256 != sha256_hex(data)]
        searches += 1
        best = others[0]
        found = set().union(*(identity_of(a.location) for a in best.appearances))
        if photo.parent.name in found:
            hits += 1
        else:
            misses.append((photo.name, sorted(found), best.score))
    assert searches >= 200
    rate = hits / searches
    assert rate >= 0.95, f"rank-1 {rate:.3f} over {searches} searches; misses: {misses}"


@pytest.mark.parametrize(
    "probe",
    ["lin-manuel-miranda.jpg", "skimage_astronaut.jpg", "skimage_camera.jpg", "ultralight_5.jpg"],
)
def test_unknown_probe_scores_below_default_threshold(gallery: Facetrail, probe: str) -> None:
    data = (FACES / "unknown" / probe).read_bytes()
    loose = gallery.search(data, threshold=-10.0, top=1, **CASE)
    assert loose.candidates, "the gallery is not empty, so a nearest face exists"
    assert loose.candidates[0].score < gallery.score_floor
    assert gallery.search(data, **CASE).candidates == ()


def test_probe_without_face_is_an_error(gallery_home: Path) -> None:
    proc = run_cli(
        gallery_home, "search", str(FACES / "noface" / "skimage_chelsea.jpg"),
        "--case", "T-1", "--purpose", "test", "--json", check=False,
    )
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["code"] == "no_face"


def test_search_json_schema_and_audit(gallery_home: Path) -> None:
    probe = PEOPLE / "Kit_Harington" / "Kit_Harington_0001.jpg"
    out = cli_json(gallery_home, "search", str(probe), "--case", "2026-0417",
                   "--purpose", "identify suspect", "--top", "5")
    assert isinstance(out, dict)
    assert out["probe"]["sha256"] == sha256_hex(probe.read_bytes())
    assert out["probe"]["searched_faces"] == [0]
    face = out["probe"]["faces"][0]
    assert len(face["box"]) == 4 and isinstance(face["det_score"], float)
    ranks = [c["rank"] for c in out["candidates"]]
    assert ranks == list(range(1, len(ranks) + 1)) and ranks
    scores = [c["score"] for c in out["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert all(s >= out["threshold"] for s in scores)
    first = out["candidates"][0]
    assert set(first) >= {"rank", "face_id", "score", "box", "image", "appearances"}
    assert set(first["image"]) == {"sha256", "width", "height"}
    appearance = first["appearances"][0]
    assert set(appearance) >= {"source", "location", "source_url", "page_url", "captured_at"}
    assert appearance["source"] == "people"
    # Kit Harington's other photos and the photo with Rose Leslie are all his.
    for c in out["candidates"]:
        assert "Kit_Harington" in identity_of(c["appearances"][0]["location"])

    stats = cli_json(gallery_home, "stats")
    assert isinstance(stats, dict) and stats["searches"] >= 1
    store = open_store(store_url_of(gallery_home))
    try:
        row, = store.audit_rows(AuditQuery(after_id=out["audit_id"] - 1, limit=1))
    finally:
        store.close()
    event, details = row.event, row.event.details
    assert row.id == out["audit_id"] and event.action == "search" and event.actor
    assert (event.case_ref, event.purpose) == ("2026-0417", "identify suspect")
    assert details["probe_sha256"] == out["probe"]["sha256"]
    assert details["candidate_face_ids"] == [c["face_id"] for c in out["candidates"]]


def test_face_choice_on_a_group_photo(gallery: Facetrail) -> None:
    data = (FACES / "group" / "kit_with_rose.jpg").read_bytes()
    default = gallery.search(data, **CASE)
    assert default.probe.searched_faces == (0,)
    areas = [f.box[2] * f.box[3] for f in default.probe.faces]
    assert areas == sorted(areas, reverse=True), "face 0 is the largest"

    every = gallery.search(data, all_faces=True, top=3, **CASE)
    assert every.probe.searched_faces == (0, 1)
    for face in (0, 1):
        chosen = gallery.search(data, face=face, top=3, **CASE)
        mine = [c for c in every.candidates if c.probe_face == face]
        assert [c.face_id for c in chosen.candidates] == [c.face_id for c in mine]
    # Rank 1 for each face is the group photo itself; the best photo in people/ names them.
    found = set()
    for face in (0, 1):
        mine = [c for c in every.candidates if c.probe_face == face]
        assert mine[0].score == 1.0 and mine[0].image.sha256 == every.probe.sha256
        best = next(c for c in mine if "people" in Path(c.appearances[0].location).parts)
        found |= identity_of(best.appearances[0].location)
    assert found == {"Kit_Harington", "Rose_Leslie"}

    with pytest.raises(InputError, match="--face 2 does not exist"):
        gallery.search(data, face=2, **CASE)


def test_search_needs_case_and_purpose(gallery: Facetrail, gallery_home: Path) -> None:
    data = (PEOPLE / "Barack_Obama" / "Barack_Obama_0001.jpg").read_bytes()
    with pytest.raises(PolicyError, match="case reference"):
        gallery.search(data, case_ref="  ", purpose="test")
    with pytest.raises(PolicyError, match="purpose"):
        gallery.search(data, case_ref="T-1", purpose="")
    proc = run_cli(gallery_home, "search", str(PEOPLE / "Barack_Obama" / "Barack_Obama_0001.jpg"),
                   "--purpose", "x", check=False)
    assert proc.returncode != 0 and "--case" in proc.stderr


def test_human_output_says_leads_not_identifications(gallery_home: Path) -> None:
    out = run_cli(gallery_home, "search", str(PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg"),
                  "--case", "T-1", "--purpose", "test").stdout
    assert "investigative leads, not identifications" in out
    assert "Barack_Obama_0001.jpg" in out


def test_low_quality_faces_are_left_out_unless_asked_for(gallery: Facetrail) -> None:
    data = (FACES / "unknown" / "ultralight_5.jpg").read_bytes()
    top = gallery.index.size
    everything = gallery.search(data, threshold=-10.0, min_quality=0.0, top=top, **CASE)
    gated = gallery.search(data, threshold=-10.0, top=3, **CASE)
    assert any(c.quality < 0.1 for c in everything.candidates)
    kept = [c.face_id for c in everything.candidates if c.quality >= 0.1][:3]
    assert [c.face_id for c in gated.candidates] == kept
    assert all(c.quality >= gallery.settings.min_quality for c in gated.candidates)
    assert [c.rank for c in gated.candidates] == [1, 2, 3]


def test_a_search_of_an_empty_gallery_says_so(tmp_path: Path) -> None:
    """A data directory with no face indexed yet: its search is not a negative result."""
    home = tmp_path / "new"
    run_cli(home, "sources", "add", "s", "--kind", "folder", "--uri", str(PEOPLE / "Ashanti"),
            "--lawful-basis", "b", "--purpose", "p", "--retention-days", "30")
    proc = run_cli(home, "search", str(PEOPLE / "Ashanti" / "Ashanti_0001.jpg"),
                   "--case", "C", "--purpose", "p", check=False)
    assert proc.returncode != 0 and "no candidate" not in proc.stdout
    assert "nothing to search: no face is indexed" in proc.stderr
    assert "--home" in proc.stderr


def test_the_python_api_takes_a_probe_path_as_str_or_path(tmp_path: Path) -> None:
    import facetrail

    photos = PEOPLE / "Ashanti"
    probe = photos / "Ashanti_0001.jpg"
    with facetrail.open(str(tmp_path / "home"), workers=1) as ft:
        ft.add_source("a", "folder", str(photos), lawful_basis="test fixtures",
                      purpose="testing", retention_days=30)
        ft.ingest("a")
        by_path = ft.search(probe, **CASE)
        by_str = ft.search(str(probe), more_probes=[str(photos / "Ashanti_0002.jpg")], **CASE)
        assert by_path.candidates and by_str.candidates
        assert by_str.probes[0].sha256 == by_path.probe.sha256 == sha256_hex(probe.read_bytes())
        with pytest.raises(facetrail.errors.NotFoundError, match="cannot read the photo"):
            ft.search(str(tmp_path / "nope.jpg"), **CASE)


def test_help_of_the_package_shows_how_to_use_it() -> None:
    import pydoc

    import facetrail
    from facetrail.engine import Facetrail

    text = pydoc.render_doc(facetrail, renderer=pydoc.plaintext)
    assert "facetrail.open(" in text and "ft.search(" in text and "FacetrailError" in text
    undocumented = [name for name, member in vars(Facetrail).items()
                    if not name.startswith("_") and callable(getattr(member, "fget", member))
                    and not (getattr(member, "fget", None) or getattr(member, "func", None)
                             or member).__doc__]
    assert undocumented == []


def two_people(tmp_path: Path) -> Path:
    """A probe with two faces side by side: one of the gallery's people, and an unknown one."""
    from PIL import Image

    known = Image.open(PEOPLE / "Ashanti" / "Ashanti_0001.jpg").convert("RGB")
    unknown = Image.open(FACES / "unknown" / "lin-manuel-miranda.jpg").convert("RGB")
    unknown.thumbnail((400, known.height))
    both = Image.new("RGB", (known.width + unknown.width, max(known.height, unknown.height)),
                     "white")
    both.paste(known, (0, 0))
    both.paste(unknown, (known.width, 0))
    path = tmp_path / "two.png"
    both.save(path)
    return path


def test_every_face_searched_says_what_it_found(gallery_home: Path, tmp_path: Path) -> None:
    """--all-faces where one face has candidates and the other none: the other is not dropped;
    it says it has no candidate and what the best score under the threshold was."""
    probe = str(two_people(tmp_path))
    args = ("--all-faces", "--top", "1", "--case", "T-1", "--purpose", "test")
    out = cli_json(gallery_home, "search", probe, *args)
    assert isinstance(out, dict)
    faces = {f["probe_face"]: f for f in out["faces"]}
    assert len(faces) == len(out["probe"]["faces"]) == 2
    (found,) = [f for f in faces.values() if f["candidates"]]
    (none,) = [f for f in faces.values() if not f["candidates"]]
    assert found["candidates"] == 1 and found["best_below"] is None
    assert none["best_below"] is not None and none["best_below"] < out["threshold"]
    assert none["best_below_fmr"] is not None  # the fixture gallery is calibrated
    assert [c["probe_face"] for c in out["candidates"]] == [found["probe_face"]]

    text = run_cli(gallery_home, "search", probe, *args).stdout
    assert f"probe face {found['probe_face']}: 1 candidate(s)" in text
    assert (f"probe face {none['probe_face']}: no candidate at or above the threshold "
            f"{out['threshold']}; the best score below it was {none['best_below']:.3f} "
            "(about 1 in") in text


def test_a_near_miss_is_not_a_clean_negative(gallery: Facetrail) -> None:
    data = (FACES / "unknown" / "lin-manuel-miranda.jpg").read_bytes()
    result = gallery.search(data, **CASE)
    (outcome,) = result.outcomes
    assert result.candidates == () and outcome.candidates == 0
    assert outcome.best_below is not None and outcome.best_below < result.threshold


def test_each_photo_of_a_fused_probe_picks_its_face(gallery_home: Path) -> None:
    """A group photo among several probe photos: its largest face is used unless --face picks,
    once per photo; the output says which face of each photo was searched."""
    group = FACES / "group" / "kit_with_rose.jpg"
    rose = sorted((PEOPLE / "Rose_Leslie").iterdir())[0]
    args = ("--case", "T-1", "--purpose", "test", "--top", "3")
    largest = cli_json(gallery_home, "search", str(rose), str(group), *args)
    picked = cli_json(gallery_home, "search", str(rose), str(group), "--face", "0",
                      "--face", "1", *args)
    assert isinstance(largest, dict) and isinstance(picked, dict)
    assert [p["searched_faces"] for p in picked["probes"]] == [[0], [1]]
    assert [p["searched_faces"] for p in largest["probes"]] == [[0], [0]]

    def who(result: dict[str, object]) -> set[str]:
        found: set[str] = set()
        for c in result["candidates"]:  # type: ignore[attr-defined]
            for a in c["appearances"]:
                found |= identity_of(a["location"])
        return found

    assert "Rose_Leslie" in who(picked)
    text = run_cli(gallery_home, "search", str(rose), str(group), *args).stdout
    assert "photo 2 (" in text and "it has 2 faces: pick another with --face" in text

    wrong = run_cli(gallery_home, "search", str(rose), str(group), "--face", "0", *args,
                    check=False)
    assert wrong.returncode != 0 and "once per probe photo" in wrong.stdout + wrong.stderr
    missing = run_cli(gallery_home, "search", str(rose), str(group), "--face", "0",
                      "--face", "5", *args, check=False)
    assert missing.returncode != 0 and "probe photo 2 has 2 face(s)" in (
        missing.stdout + missing.stderr)


def test_conflicting_face_choices_are_refused(gallery: Facetrail) -> None:
    data = (FACES / "group" / "kit_with_rose.jpg").read_bytes()
    with pytest.raises(InputError, match="not both"):
        gallery.search(data, face=1, photo_faces=(0,), **CASE)
    with pytest.raises(InputError, match="not both"):
        gallery.search(data, all_faces=True, photo_faces=(0,), **CASE)
    assert gallery.search(data, photo_faces=(1,), threshold=-1.0, **CASE).probe.searched_faces \
        == (1,)
