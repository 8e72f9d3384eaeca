"""The web UI end to end: a real server (uvicorn in a subprocess) over a real ingested gallery,
driven by headless Chromium through Playwright.

Screenshots of every step are saved under ``test-artifacts/browser/`` at the repository root.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import APIResponse, Browser, Page, Route, expect, sync_playwright
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from conftest import FACES, PEOPLE, add_source, run_cli
from stores import copy_home, drop_audit_guards, raw_sql, store_url_of
from webserver import Server, add_users, login_form_token

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
ROLES = ("admin", "analyst", "reviewer", "auditor")

# CI installs chromium (scripts/test.sh), so there a missing browser is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium at /usr/bin/chromium",
)


PAGE_URL = "https://press.example.org/2019/premiere"
PRESS_PHOTOS = {
    # image URL in the archive -> the fixture photo served there
    "https://press.example.org/img/kit-rose.jpg": FACES / "group" / "kit_with_rose.jpg",
    "https://press.example.org/img/rose-1.jpg": PEOPLE / "Rose_Leslie" / "Rose_Leslie_0001.jpg",
    "https://press.example.org/img/rose-2.jpg": PEOPLE / "Rose_Leslie" / "Rose_Leslie_0002.jpg",
}
CAPTURED = "2019-04-02T19:30:00Z"


def write_press_archive(path: Path) -> Path:
    """A small web archive: one page embedding the photos, and the photos themselves."""
    images = "".join(f'<img src="{url}">' for url in PRESS_PHOTOS)
    records = [(PAGE_URL, "text/html", f"<html><body>{images}</body></html>".encode())]
    records += [(url, "image/jpeg", photo.read_bytes()) for url, photo in PRESS_PHOTOS.items()]
    with path.open("wb") as out:
        writer = WARCWriter(out, gzip=True)
        for url, kind, body in records:
            http = StatusAndHeaders("200 OK", [("Content-Type", kind)], protocol="HTTP/1.1")
            record = writer.create_warc_record(
                url, "response", payload=io.BytesIO(body), http_headers=http,
                warc_headers_dict={"WARC-Date": CAPTURED},
            )
            writer.write_record(record)
            record.raw_stream.close()  # warcio buffers the record in a temporary file
    return path


@pytest.fixture(scope="module")
def server(gallery_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own over the gallery plus a 'press' web archive (images with URLs), and
    two sources registered but not ingested: an 'inbox' manifest, one of whose rows has no
    file, and 'later', a folder."""
    root = tmp_path_factory.mktemp("ui")
    home = root / "home"
    copy_home(gallery_home, home)
    add_source(home, "press", write_press_archive(root / "press.warc.gz"), kind="warc")
    run_cli(home, "ingest", "press")
    inbox = root / "inbox.csv"  # its rows name files in its folder (sources.confine)
    (root / "ashanti.jpg").write_bytes((PEOPLE / "Ashanti" / "Ashanti_0001.jpg").read_bytes())
    inbox.write_text("path,source_url\nashanti.jpg,\n"
                     ",https://elsewhere.example.net/only-a-url.jpg\n")
    add_source(home, "inbox", inbox, kind="manifest")
    later = root / "later"  # new images (trailing bytes differ), enough to cancel a job midway
    later.mkdir()
    photo = (PEOPLE / "Ashanti" / "Ashanti_0001.jpg").read_bytes()
    for i in range(120):
        (later / f"copy_{i:03d}.jpg").write_bytes(photo + f"copy {i}".encode())
    add_source(home, "later", later)
    server = Server(home, add_users(home)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context.new_page()
    context.close()


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def log_in(page: Page, server: Server, user: str) -> None:
    page.goto(server.url + "/login")
    page.fill("#token", server.tokens[user])
    page.click("button[type=submit]")
    page.wait_for_selector("[data-testid=who]")


@contextmanager
def session(server: Server, user: str) -> Iterator[httpx.Client]:
    """An HTTP client logged in through the login form, as a browser would be."""
    with httpx.Client(base_url=server.url, timeout=120) as client:
        response = client.post("/login", data={"token": server.tokens[user],
                                                "csrf_token": login_form_token(client)})
        assert response.status_code == 303 and "facetrail_session" in response.cookies
        yield client


PAGES = {"/search": "analyst", "/review": "reviewer", "/audit": "auditor", "/sources": "admin"}


@pytest.mark.parametrize("role", ROLES)
def test_each_role_sees_only_its_own_pages(server: Server, role: str) -> None:
    with session(server, role) as client:
        home = client.get("/", follow_redirects=True)
        assert home.status_code == 200
        for path, allowed in PAGES.items():
            response = client.get(path)
            if allowed == role:
                assert response.status_code == 200, path
                assert f'href="{path}"' in home.text
                assert "default-src 'self'" in response.headers["content-security-policy"]
            else:
                assert response.status_code == 403, path
                assert "may not do this" in response.text
                assert f'href="{path}"' not in home.text
                assert f'href="{path}"' not in response.text


def test_without_a_session_every_page_leads_to_login(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        for path in ("/", *PAGES):
            response = client.get(path)
            assert response.status_code == 303 and response.headers["location"] == "/login"
        bad = client.post("/login", data={"token": "ft_not-a-token",
                                          "csrf_token": login_form_token(client)})
        assert bad.status_code == 401 and "unknown or revoked token" in bad.text
        assert "facetrail_session" not in bad.cookies


def test_logout_needs_the_csrf_token_and_ends_the_session(server: Server) -> None:
    with session(server, "auditor") as client:
        assert client.post("/logout").status_code == 403  # no CSRF token: refused
        assert client.get("/audit").status_code == 200
        token = client.get("/audit").text.split('name="csrf-token" content="')[1].split('"')[0]
        cookie = client.cookies["facetrail_session"]
        out = client.post("/logout", data={"csrf_token": token})
        assert out.status_code == 303 and out.headers["location"] == "/login"
    # The old cookie no longer opens anything.
    with httpx.Client(base_url=server.url, cookies={"facetrail_session": cookie}) as client:
        assert client.get("/audit").headers.get("location") == "/login"


def drop_file(page: Page, selector: str, path: Path, mime: str = "image/jpeg") -> None:
    """Drop a file on an element, as dragging it from the desktop does."""
    transfer = page.evaluate_handle(
        """async ([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: mime}));
            return transfer;
        }""",
        [base64.b64encode(path.read_bytes()).decode(), path.name, mime],
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def follow(page: Page, server: Server, test_id: str) -> APIResponse:
    """Fetch what a link points to, with the page's session."""
    href = page.get_by_test_id(test_id).get_attribute("href")
    assert href is not None and href.startswith("/")
    return page.request.get(server.url + href)


def log_out(page: Page) -> None:
    page.click("header form[action='/logout'] button")
    page.wait_for_url("**/login")


def _second_face_box(photo: Path) -> tuple[int, ...]:
    """The box facetrail's default model gives the second face of ``photo``."""
    from facetrail.faces import DEFAULT_MODEL, make_model
    from facetrail.imaging import decode
    from facetrail.pipeline.analyze import Analyzer
    from facetrail.settings import Settings

    settings = Settings(home=Path("/nonexistent"))
    analyzer = Analyzer(settings, make_model(DEFAULT_MODEL, settings))
    return analyzer.faces(decode(photo.read_bytes(), settings))[1].box


def test_journey_search_review_audit(server: Server, page: Page) -> None:
    probe = FACES / "group" / "kit_with_rose.jpg"
    rose = _second_face_box(probe)  # the smaller face: number 2 on the page (index 1)

    # 1. An analyst logs in and lands on the search page.
    log_in(page, server, "analyst")
    assert page.url == server.url + "/search"
    expect(page.get_by_test_id("leads-banner")).to_contain_text("investigative leads")
    shot(page, "01-analyst-search-page")

    # 2. They drop a group photo; its two faces are boxed on it.
    drop_file(page, "[data-dropzone]", probe)
    boxes = page.locator("[data-picker] rect.facebox")
    expect(boxes).to_have_count(2)
    assert [boxes.nth(1).get_attribute(a) for a in ("x", "y", "width", "height")] == [
        str(v) for v in rose
    ]
    expect(page.locator("form[data-probe-form] button[type=submit]")).to_be_disabled()
    shot(page, "02-probe-faces-drawn")

    # 3. They pick the second face, give the case and purpose, and search.
    boxes.nth(1).click()
    expect(boxes.nth(1)).to_have_class("facebox picked")
    page.fill("#case_ref", "CASE-0417")
    page.fill("#purpose", "identify the woman photographed at the premiere")
    shot(page, "03-face-picked")
    page.click("form[data-probe-form] button[type=submit]")
    page.wait_for_url("**/searches/*")

    # 4. Rank 1 is that face, shown with where its image was found, links included.
    expect(page.get_by_test_id("case")).to_have_text("CASE-0417")
    first = page.get_by_test_id("candidate").first
    expect(first.locator(".rank")).to_have_text("#1")
    assert [first.locator("svg rect").get_attribute(a) for a in ("x", "y", "width", "height")] \
        == [str(v) for v in rose]
    image_link = first.locator('a[href="https://press.example.org/img/kit-rose.jpg"]')
    expect(image_link).to_have_attribute("rel", "noreferrer noopener")
    expect(first.locator(f'a[href="{PAGE_URL}"]')).to_have_attribute("rel", "noreferrer noopener")
    expect(first.get_by_test_id("appearances")).to_contain_text(CAPTURED)
    expect(first.get_by_test_id("appearances")).to_contain_text("press")
    # The next candidates are other photos of the same person.
    second = page.get_by_test_id("candidate").nth(1)
    expect(second.get_by_test_id("appearances")).to_contain_text("Rose_Leslie")
    # The shipped calibration says what each score means, in words, and the page shows the
    # threshold the candidates passed.
    expect(first.get_by_test_id("calibrated")).to_contain_text("unrelated faces score this high")
    for said in page.get_by_test_id("calibrated").all_inner_texts():
        assert "e-" not in said and "1 in" in said, said  # no 1.5e-20, no bare numbers
    expect(page.get_by_test_id("threshold")).to_contain_text("candidates score at least")
    expect(page.get_by_test_id("score-note")).to_contain_text("are calibrated")
    expect(page.locator("[data-testid=picked-label]")).to_have_text("✓ searched")
    page.wait_for_function(  # every face crop was served and decoded
        "() => [...document.querySelectorAll('[data-testid=candidate-tile] img')]"
        ".every((i) => i.complete && i.naturalWidth > 0)"
    )
    shot(page, "04-results")
    search_url = page.url

    # The case report downloads as JSON and CSV, and prints as HTML.
    report = follow(page, server, "export-json")
    assert report.ok and report.json()["searches"][0]["search"]["case_ref"] == "CASE-0417"
    table = follow(page, server, "export-csv")
    assert table.ok and "https://press.example.org/img/kit-rose.jpg" in table.text()
    printable = follow(page, server, "export-print")
    assert printable.ok and "case CASE-0417" in printable.text()
    log_out(page)

    # 5. A reviewer finds it in the queue and confirms rank 1, with a note.
    log_in(page, server, "reviewer")
    assert page.url == server.url + "/review"
    row = page.get_by_test_id("queue-row").filter(has_text="CASE-0417")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(2)).to_have_text("analyst")  # who searched
    expect(row.locator("td").nth(6)).to_have_text("0")  # decided, of 3 candidates
    shot(page, "05-review-queue")
    row.get_by_role("link", name="Review").click()
    candidate = page.get_by_test_id("review-candidate").first
    expect(candidate.locator("img.crop")).to_have_count(2)  # probe face beside candidate face
    candidate.get_by_label("Confirm: same person").check()
    candidate.locator("textarea").fill("Same hairline, eyes and nose; same event.")
    shot(page, "06-review-decision")
    candidate.get_by_role("button", name="Record decision").click()
    page.wait_for_load_state()
    expect(page.get_by_test_id("review-candidate").first).to_contain_text("Decided: confirm")
    expect(page.locator(".flash.ok")).to_contain_text("is recorded in the audit log")
    shot(page, "07-reviewed")
    log_out(page)

    # The analyst sees the decision on the results page.
    log_in(page, server, "analyst")
    page.goto(search_url)
    expect(page.get_by_test_id("decision").first).to_contain_text("confirmed by reviewer")
    page.goto(server.url + "/search")
    mine = page.get_by_test_id("my-search").filter(has_text="CASE-0417")
    expect(mine).to_contain_text("2 awaiting review")  # 1 of 3 candidates decided
    log_out(page)

    # 6. An auditor sees the chain verified, with the search and the review in it.
    log_in(page, server, "auditor")
    assert page.url == server.url + "/audit"
    expect(page.get_by_test_id("chain-verified")).to_be_visible()
    page.fill("#f-case", "CASE-0417")
    page.get_by_role("button", name="Filter").click()
    actions = page.locator("[data-testid=audit-row] td:nth-child(4)").all_inner_texts()
    assert actions == ["review", "search"]
    shot(page, "08-audit-verified")
    export = follow(page, server, "audit-export")
    assert export.ok and [json.loads(x)["action"] for x in export.text().splitlines()] == [
        "search", "review"
    ]


def test_auditor_has_no_search_page(server: Server, page: Page) -> None:
    log_in(page, server, "auditor")
    expect(page.locator("nav a")).to_have_text(["Audit"])
    response = page.goto(server.url + "/search")
    assert response is not None and response.status == 403
    expect(page.locator("input[type=file]")).to_have_count(0)
    expect(page.locator("main")).to_contain_text("may not do this")
    shot(page, "09-auditor-no-search")


def test_admin_starts_an_ingest_job_and_reads_its_errors(server: Server, page: Page) -> None:
    log_in(page, server, "admin")
    assert page.url == server.url + "/sources"
    expect(page.locator("nav a")).to_have_text(["Sources", "Rights", "Subject access"])
    inbox = page.get_by_test_id("source-row").filter(has_text="inbox")
    expect(inbox.get_by_test_id("source-images")).to_have_text("0")  # nothing ingested yet
    shot(page, "10-sources")
    inbox.get_by_role("button", name="Start ingest").click()
    expect(page.locator(".flash.ok")).to_contain_text("of source inbox started")
    job = page.get_by_test_id("job").filter(has_text="inbox").first
    expect(job).to_be_visible()
    # The page follows the job and reloads itself when it ends.
    expect(job.get_by_test_id("job-status")).to_have_text("completed", timeout=120_000)
    expect(job).to_contain_text("2 items: 0 new images, 1 duplicates")  # Ashanti is indexed
    expect(job).to_contain_text("1 errors")
    inbox = page.get_by_test_id("source-row").filter(has_text="inbox")
    expect(inbox.get_by_test_id("source-images")).to_have_text("1")
    errors = page.locator("#errors-inbox")
    expect(errors).to_contain_text("https://elsewhere.example.net/only-a-url.jpg")
    expect(errors).to_contain_text("bad_manifest_row")
    bar = job.locator("progress")  # a finished job's bar is full, whatever its total
    assert bar.get_attribute("value") == bar.get_attribute("max") == "2"
    assert "built-in method" not in page.content()
    shot(page, "11-ingest-done-with-errors")


def test_probe_without_a_face_is_explained(server: Server, page: Page) -> None:
    log_in(page, server, "analyst")
    page.set_input_files("input[name=probe]", FACES / "noface" / "skimage_coins.jpg")
    expect(page.locator("[data-probe-status]")).to_contain_text("No face was found")
    expect(page.locator("[data-picker] rect.facebox")).to_have_count(0)
    expect(page.locator("form[data-probe-form] button[type=submit]")).to_be_disabled()


def test_audit_page_names_the_first_tampered_event(
    gallery_home: Path, tmp_path: Path, page: Page
) -> None:
    home = tmp_path / "home"
    copy_home(gallery_home, home)
    server = Server(home, add_users(home)).start()
    try:
        # Someone with write access to the database edits an old event, as an attacker would:
        # the append-only triggers have to go first.
        db = store_url_of(home)
        raw_sql(db, *drop_audit_guards(db), "UPDATE audit SET actor='someone-else' WHERE id=2")
        log_in(page, server, "auditor")
        broken = page.get_by_test_id("chain-broken")
        expect(broken).to_contain_text("Chain broken at event #2")
        expect(broken).to_contain_text("changed after it was written")
        expect(page.get_by_test_id("chain-verified")).to_have_count(0)
        expect(page.locator("tr.bad-event td").first).to_have_text("2")  # marked in the list
        shot(page, "12-audit-tampered")
    finally:
        server.stop()


def csrf_of(html: str) -> str:
    return html.split('name="csrf-token" content="')[1].split('"')[0]


def test_search_form_works_without_javascript(server: Server) -> None:
    """The form alone (file, case, purpose) searches the largest face."""
    probe = FACES / "group" / "two_people.jpg"
    with session(server, "analyst2") as client:
        token = csrf_of(client.get("/search").text)
        form = {"csrf_token": token, "case_ref": "CASE-NOJS", "purpose": ""}
        files = {"probe": (probe.name, probe.read_bytes(), "image/jpeg")}
        refused = client.post("/search", data=form, files=files)
        assert refused.status_code == 422
        assert "needs a case reference and a purpose" in refused.text
        assert 'value="CASE-NOJS"' in refused.text  # what was typed is kept
        form["purpose"] = "check the no-script path"
        done = client.post("/search", data=form, files=files)
        assert done.status_code == 303 and done.headers["location"].startswith("/searches/")
        results = client.get(done.headers["location"])
        assert results.status_code == 200
        assert "Face 1 of 2 searched" in results.text
        # The largest face is one of the two people in the photo; their other photos are found.
        assert "people/Barack_Obama/" in results.text or "people/Joseph_Biden/" in results.text
        without_token = client.post("/search", data={**form, "csrf_token": ""}, files=files)
        assert without_token.status_code == 403 and "CSRF" in without_token.text


def test_audit_filters_by_user_and_dates(server: Server) -> None:
    today = datetime.now(UTC).date()
    with session(server, "auditor") as client:
        def rows(**params: str) -> list[str]:
            page = client.get("/audit", params=params)
            assert page.status_code == 200
            return page.text.split('data-testid="audit-row"')[1:]

        mine = rows(actor="auditor")
        assert any("<td>auditor</td><td>login</td>" in r for r in mine)
        assert all("<td>auditor</td>" in r for r in mine)
        assert len(rows(since=today.isoformat(), until=today.isoformat())) > len(mine)
        assert rows(until=(today - timedelta(days=1)).isoformat()) == []
        assert rows(since=(today + timedelta(days=1)).isoformat()) == []
        export = client.get("/audit", params={"actor": "auditor"}).text
        assert 'href="/api/audit/export?actor=auditor"' in export
        bad = client.get("/audit", params={"since": "yesterday"})
        assert bad.status_code == 422 and "must be a date like" in bad.text


def test_admin_cancels_an_ingest_job(server: Server, page: Page) -> None:
    log_in(page, server, "admin")
    later = page.get_by_test_id("source-row").filter(has_text="later")
    later.get_by_role("button", name="Start ingest").click()
    job = page.get_by_test_id("job").filter(has_text="later").first
    # Cancelled before its worker has finished starting, or stopped between images.
    job.get_by_role("button", name="Cancel").click()
    expect(page.locator(".flash.ok")).to_contain_text("asked to stop")
    job = page.get_by_test_id("job").filter(has_text="later").first
    expect(job.get_by_test_id("job-status")).to_have_text("cancelled", timeout=60_000)
    expect(job.get_by_role("button", name="Cancel")).to_have_count(0)
    shot(page, "13-ingest-cancelled")


def test_a_reviewer_never_reviews_their_own_search(server: Server) -> None:
    # Carol searches as an analyst, then becomes a reviewer (her role changed in the store).
    made = json.loads(run_cli(server.home, "users", "add", "carol", "--role", "analyst",
                              "--json").stdout)
    probe = PEOPLE / "Kit_Harington" / "Kit_Harington_0001.jpg"
    with httpx.Client(base_url=server.url, timeout=120,
                      headers={"Authorization": f"Bearer {made['token']}"}) as api:
        response = api.post("/api/searches/upload",
                            data={"case_ref": "CASE-CAROL", "purpose": "two-person rule"},
                            files={"file": (probe.name, probe.read_bytes(), "image/jpeg")})
        assert response.status_code == 201, response.text
        search_id = response.json()["search"]["id"]
    raw_sql(store_url_of(server.home), "UPDATE users SET role = 'reviewer' WHERE name = 'carol'")
    server.tokens["carol"] = made["token"]

    with session(server, "carol") as client:
        assert "CASE-CAROL" not in client.get("/review").text
        own = client.get(f"/review/{search_id}")
        assert own.status_code == 403 and "two-person rule" in own.text
        refused = client.post(f"/review/{search_id}/1", data={
            "csrf_token": csrf_of(client.get("/review").text), "decision": "confirm",
            "note": "mine",
        })
        assert refused.status_code == 403 and "two-person rule" in refused.text
    with session(server, "reviewer") as client:
        assert "CASE-CAROL" in client.get("/review").text
        assert client.get(f"/review/{search_id}").status_code == 200


def test_a_refused_search_keeps_the_probe_and_the_picked_face(server: Server, page: Page) -> None:
    log_in(page, server, "analyst2")
    drop_file(page, "[data-dropzone]", FACES / "group" / "two_people.jpg")
    page.locator("[data-picker] rect.facebox").nth(1).click()
    page.fill("#case_ref", "   ")  # passes the browser's check, not the server's
    page.fill("#purpose", "a purpose")
    page.click("form[data-probe-form] button[type=submit]")
    expect(page.get_by_test_id("search-error")).to_contain_text("needs a case reference")
    boxes = page.locator("[data-picker] rect.facebox")
    expect(boxes).to_have_count(2)
    expect(boxes.nth(1)).to_have_class("facebox picked")
    expect(page.locator("#purpose")).to_have_value("a purpose")
    expect(page.locator("form[data-probe-form] button[type=submit]")).to_be_enabled()
    # Searching again needs no new file: the stored probe is searched.
    page.fill("#case_ref", "CASE-AGAIN")
    page.click("form[data-probe-form] button[type=submit]")
    page.wait_for_url("**/searches/*")
    expect(page.get_by_test_id("case")).to_have_text("CASE-AGAIN")
    assert "Face 2 of 2 searched" in page.locator("main").inner_text()


def test_pages_load_nothing_from_another_origin(server: Server, page: Page) -> None:
    """Offline, as on a disconnected network: every request to another origin is cut off, and
    the API documentation and the app's pages still show, with no policy violation."""
    elsewhere: list[str] = []
    violations: list[str] = []

    def cut(route: Route) -> None:
        elsewhere.append(route.request.url)
        route.abort()

    page.route(lambda url: not url.startswith(server.url + "/"), cut)
    page.on("console", lambda m: violations.append(m.text)
            if "Content Security Policy" in m.text else None)
    page.goto(server.url + "/docs")
    expect(page.get_by_role("heading", name="facetrail API")).to_be_visible()
    upload = page.locator('[data-operation="POST /api/searches/upload"]')
    expect(upload).to_contain_text("probe image")
    shot(page, "docs")
    log_in(page, server, "analyst")
    expect(page.locator("form[data-probe-form]")).to_be_visible()
    assert elsewhere == [] and violations == []


def test_static_files_are_a_fixed_list(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        script = client.get("/static/app.js")
        assert script.status_code == 200 and "use strict" in script.text
        assert client.get("/static/app.css").headers["content-type"].startswith("text/css")
        for path in ("/static/ui.py", "/static/..%2Fui.py", "/static/%2e%2e%2fapp.py"):
            assert client.get(path).status_code == 404, path


def api_search(server: Server, case_ref: str, probe: Path, face: int = 0,
               threshold: float | None = None) -> int:
    """A search made by the analyst through the API; returns its id."""
    data = {"case_ref": case_ref, "purpose": "browser test", "face": str(face)}
    if threshold is not None:
        data["threshold"] = str(threshold)
    with httpx.Client(base_url=server.url, timeout=120, headers={
            "Authorization": f"Bearer {server.tokens['analyst']}"}) as api:
        response = api.post("/api/searches/upload", data=data,
                            files={"file": (probe.name, probe.read_bytes(), "image/jpeg")})
        assert response.status_code == 201, response.text
        return int(response.json()["search"]["id"])


@pytest.mark.parametrize("case_ref", ["2026/0417", "..", "a b?c#d"])
def test_report_links_work_for_any_case_reference(
    server: Server, page: Page, case_ref: str
) -> None:
    search_id = api_search(server, case_ref, PEOPLE / "Kit_Harington" / "Kit_Harington_0001.jpg")
    log_in(page, server, "analyst")
    page.goto(f"{server.url}/searches/{search_id}")
    expect(page.get_by_test_id("case")).to_have_text(case_ref)
    report = follow(page, server, "export-json")
    assert report.ok and report.json()["case_ref"] == case_ref
    table = follow(page, server, "export-csv")
    assert table.ok and table.text().count("\n") > 1
    page.get_by_test_id("export-print").evaluate("a => a.removeAttribute('target')")
    page.get_by_test_id("export-print").click()
    expect(page.locator("h1")).to_have_text(f"facetrail case report: case {case_ref}")


def test_unknown_pages_are_pages_and_unknown_api_paths_json(server: Server) -> None:
    with session(server, "analyst") as client:
        page = client.get("/no/such/page")
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "Not found" in page.text and 'data-testid="who"' in page.text
        assert client.get("/searches/not-a-number").headers["content-type"].startswith(
            "text/html")
        api = client.get("/api/no/such/thing")
        assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/no/such/page").headers["content-type"].startswith("text/html")


def test_disagreeing_reviewers_both_show(server: Server, page: Page) -> None:
    search_id = api_search(server, "CASE-DISAGREE", FACES / "group" / "kit_with_rose.jpg", 1)
    made = json.loads(run_cli(server.home, "users", "add", "reviewer2", "--role", "reviewer",
                              "--json").stdout)
    server.tokens["reviewer2"] = made["token"]
    for who, decision in (("reviewer", "confirm"), ("reviewer2", "reject")):
        log_in(page, server, who)
        page.goto(f"{server.url}/review/{search_id}")
        candidate = page.get_by_test_id("review-candidate").first
        candidate.get_by_label(f"{decision.title()}:").check()
        candidate.locator("textarea").fill(f"{who} compared the eyes and the nose")
        candidate.get_by_role("button", name="Record decision").click()
        expect(page.locator(".flash.ok")).to_contain_text(f"({decision})")
        log_out(page)
    log_in(page, server, "analyst")
    page.goto(f"{server.url}/searches/{search_id}")
    first = page.get_by_test_id("candidate").first
    expect(first.get_by_test_id("decision")).to_have_text(
        ["confirmed by reviewer", "rejected by reviewer2"])
    expect(first.get_by_test_id("disagreement")).to_be_visible()
    expect(first.get_by_test_id("review-note")).to_have_count(2)
    shot(page, "14-reviewers-disagree")


def test_a_calibrated_search_without_candidates_says_so(server: Server, page: Page) -> None:
    search_id = api_search(server, "CASE-NONE", FACES / "unknown" / "skimage_astronaut.jpg",
                           threshold=0.999)  # someone not in the gallery
    log_in(page, server, "analyst")
    page.goto(f"{server.url}/searches/{search_id}")
    expect(page.get_by_test_id("no-candidates")).to_contain_text("0.999")
    expect(page.get_by_test_id("best-below")).to_contain_text(  # a near miss says how near
        re.compile(r"The best score below it was -?0\.\d{3}: .* unrelated faces score this high"))
    expect(page.get_by_test_id("threshold")).to_contain_text("chosen for this search")
    expect(page.get_by_test_id("score-note")).to_contain_text("are calibrated")
    expect(page.locator("main")).not_to_contain_text("not calibrated")


PHONE = {"width": 390, "height": 844}


def fits(page: Page) -> None:
    """Nothing on the page is wider than the screen."""
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"{page.url}: {width} px wide"  # type: ignore[index]


@pytest.mark.parametrize("size", [PHONE, {"width": 1280, "height": 800}],
                         ids=["phone", "desktop"])
def test_pages_fit_the_screen_and_work_by_keyboard(
    server: Server, browser: Browser, size: dict[str, int]
) -> None:
    context = browser.new_context(viewport=size)  # type: ignore[arg-type]
    page = context.new_page()
    name = "phone" if size == PHONE else "desktop"
    try:
        search_id = api_search(server, "CASE-2026/0417-PHONE", FACES / "group" /
                               "kit_with_rose.jpg", 1)
        log_in(page, server, "analyst")
        # The first Tab reaches the skip link, which leads past the navigation.
        page.keyboard.press("Tab")
        skip = page.get_by_test_id("skip-link")
        expect(skip).to_be_focused()
        ring = skip.evaluate("a => [getComputedStyle(a).outlineStyle, getComputedStyle(a)"
                             ".outlineWidth, getComputedStyle(a).outlineColor]")
        assert ring[0] == "solid" and float(ring[1].removesuffix("px")) >= 3, ring
        shot(page, f"{name}-skip-link")
        page.keyboard.press("Enter")
        expect(page.locator("main")).to_be_focused()
        drop_file(page, "[data-dropzone]", FACES / "group" / "kit_with_rose.jpg")
        boxes = page.locator("[data-picker] rect.facebox")
        expect(boxes).to_have_count(2)
        boxes.nth(1).focus()
        page.keyboard.press("Enter")
        # The picked face is told by more than its colour: a solid outline and its label.
        expect(page.locator("[data-picker] text.facebox-label.picked")).to_have_text("✓ 2 picked")
        dashes = [boxes.nth(i).evaluate("b => getComputedStyle(b).strokeDasharray")
                  for i in range(2)]
        assert dashes[0] != "none" and dashes[1] == "none", dashes
        fits(page)
        shot(page, f"{name}-search")
        for path in (f"/searches/{search_id}", "/search"):
            page.goto(server.url + path)
            fits(page)
        shot(page, f"{name}-results-and-history")
        page.goto(f"{server.url}/searches/{search_id}")
        fits(page)
        shot(page, f"{name}-results")
        log_out(page)
        for user, path in (("reviewer", "/review"), ("reviewer", f"/review/{search_id}"),
                           ("auditor", "/audit"), ("admin", "/sources")):
            log_in(page, server, user)
            page.goto(server.url + path)
            fits(page)
            shot(page, f"{name}-{user}-{path.strip('/').replace('/', '-')}")
            log_out(page)
    finally:
        context.close()
