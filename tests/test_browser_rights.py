"""The Rights page in a real browser: an opt-out previewed with its borderline faces, one of
them ticked after review, confirmed; the kept search then shows the erased candidates.

Screenshots are saved under ``test-artifacts/browser/`` at the repository root.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

import facetrail
from conftest import PEOPLE
from stores import copy_home, store_url_of
from test_browser import CHROMIUM, browser, log_in, page, shot  # noqa: F401 (fixtures)
from webserver import Server, add_users

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")

PERSON = "Jennifer_Aniston"
PHOTO = PEOPLE / PERSON / f"{PERSON}_0001.jpg"


def threshold_with_borderline(home: Path) -> float:
    """An opt-out threshold at which the photo matches some faces and leaves at least one
    just under it (within the review band): half-way between two close scores."""
    with facetrail.open(home, store_url=store_url_of(home)) as engine:
        found = engine.erase_photos([PHOTO], reason="probe", threshold=-0.9, dry_run=True)
    scores = [m.score for m in found.matches]
    for above, below in zip(scores, scores[1:], strict=False):
        if 0.0 < above - below < 0.1 and below > 0.3:
            return round((above + below) / 2, 4)
    raise AssertionError(f"no two close scores among {scores[:20]}")


@pytest.fixture(scope="module")
def server(gallery_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("rights-ui") / "home"
    copy_home(gallery_home, home)
    threshold = threshold_with_borderline(home)
    server = Server(home, add_users(home),
                    env={"FACETRAIL_OPTOUT_THRESHOLD": str(threshold)}).start()
    try:
        yield server
    finally:
        server.stop()


def test_an_opt_out_previewed_with_borderline_faces_then_confirmed(
    server: Server, browser: Browser, page: Page  # noqa: F811
) -> None:
    with server.client("analyst") as analyst:
        kept = analyst.post("/api/searches/upload", files={"file": (PHOTO.name,
                            PHOTO.read_bytes())}, data={"case_ref": "OPT-UI", "purpose": "ui"})
        assert kept.status_code == 201, kept.text
    search_id = kept.json()["search"]["id"]

    log_in(page, server, "admin")
    page.click("nav >> text=Rights")
    page.set_input_files("#optout-photos", str(PHOTO))
    page.fill("#optout-reference", "REQ-UI-1")
    page.fill("#optout-note", "by letter")
    page.click("[data-testid=optout-form] button[type=submit]")
    expect(page.locator("[data-testid=preview]")).to_be_visible()
    matched = page.locator("[data-testid=erase-faces] figure")
    borderline = page.locator("[data-testid=borderline] figure")
    assert matched.count() >= 1 and borderline.count() >= 1
    page.wait_for_function(  # every face crop was served and decoded
        "() => [...document.images].every((i) => i.complete && i.naturalWidth > 0)")
    shot(page, "rights-optout-preview")
    erased = [int(f.get_attribute("data-face-id") or 0) for f in matched.all()]
    ticked = int(borderline.first.get_attribute("data-face-id") or 0)
    untouched = [int(f.get_attribute("data-face-id") or 0) for f in borderline.all()[1:]]
    borderline.first.locator("input[type=checkbox]").check()
    page.click("[data-testid=confirm]")
    expect(page.locator(".flash.ok")).to_contain_text("Opt-out REQ-UI-1 recorded")
    expect(page.locator(".flash.ok")).to_contain_text("1 borderline faces after review")
    expect(page.locator("[data-testid=optout-row]")).to_contain_text("REQ-UI-1")
    shot(page, "rights-optout-done")

    with server.client("admin") as admin:
        for face in [*erased, ticked]:
            assert admin.get(f"/api/faces/{face}/crop").status_code == 404, face
        for face in untouched:
            assert admin.get(f"/api/faces/{face}/crop").status_code == 200, face

    page.locator("[data-testid=optout-row] button").click()
    expect(page.locator("[data-testid=no-optouts]")).to_be_visible()

    page.click("[data-testid=who] ~ form button")  # log out
    log_in(page, server, "analyst")
    page.goto(f"{server.url}/searches/{search_id}")
    tombs = page.locator("[data-testid=candidate] [data-testid=erased]")
    expect(tombs.first).to_contain_text("erased on")
    assert tombs.count() == len(set(erased) & {
        c["face_id"] for c in kept.json()["result"]["candidates"]})
    shot(page, "rights-kept-search-tombstones")
