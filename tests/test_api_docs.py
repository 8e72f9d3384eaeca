"""The API's documentation page, and every other page: made by the server alone.

Pages share their origin with the session cookie, so none may load a script, a style or
anything else from another origin, and each carries a Content-Security-Policy that allows
nothing but the server itself. The documentation page is drawn on the server, works offline
and lists every route of the OpenAPI document.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser

import httpx
import pytest

from conftest import PEOPLE
from webserver import Server, login_form_token

PROBE = PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg"
REFERENCE_ATTRIBUTES = {"src", "href", "action", "formaction", "data", "poster", "srcset",
                        "background", "xlink:href"}
ABSOLUTE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:|//|\\\\)", re.IGNORECASE)
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
"""Names, not addresses: nothing is loaded from them."""
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)", re.IGNORECASE)


class References(HTMLParser):
    """Every URL a page makes the browser load or send to (links a person may follow, <a>, are
    data shown to them, not loads, and are left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            return
        for name, value in attrs:
            if value is None:
                continue
            if name == "style":
                self.urls += CSS_URL.findall(value)
            elif name == "srcset":
                self.urls += [part.split()[0] for part in value.split(",") if part.strip()]
            elif name in REFERENCE_ATTRIBUTES:
                self.urls.append(value)

    def handle_data(self, data: str) -> None:
        self.urls += CSS_URL.findall(data)


def foreign(text: str, server: Server, kind: str = "text/html") -> list[str]:
    """What a page or a static file refers to outside the server's own origin."""
    if kind.startswith("text/html"):
        parser = References()
        parser.feed(text)
        urls = parser.urls
    else:
        urls = CSS_URL.findall(text) + re.findall(r"""["'`]((?:https?:)?//[^"'`\s]+)""", text)
    return [u for u in urls if ABSOLUTE.match(u) and u not in NAMESPACES
            and not u.startswith(server.url + "/")]


def strict_policy(response: httpx.Response) -> bool:
    """A Content-Security-Policy naming no source but the server itself (or none)."""
    policy = response.headers.get("content-security-policy")
    if policy is None:
        return False
    sources = [token for directive in policy.split(";") for token in directive.split()[1:]]
    return "default-src 'self'" in policy and set(sources) <= {"'self'", "'none'"}


@contextmanager
def logged_in(server: Server, user: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        response = client.post("/login", data={"token": server.tokens[user],
                                               "csrf_token": login_form_token(client)})
        assert response.status_code == 303
        yield client


@pytest.fixture(scope="module")
def search_id(api_server: Server) -> int:
    with api_server.client("analyst") as analyst:
        made = analyst.post("/api/searches/upload", files={"file": (PROBE.name,
                            PROBE.read_bytes())}, data={"case_ref": "DOCS-1", "purpose": "docs"})
    assert made.status_code == 201, made.text
    return int(made.json()["search"]["id"])


def test_the_docs_page_is_drawn_by_the_server_and_lists_every_route(api_server: Server) -> None:
    with httpx.Client(base_url=api_server.url, timeout=60) as anon:
        page = anon.get("/docs")
        spec = anon.get("/openapi.json").json()
        assert anon.get("/docs/oauth2-redirect").status_code == 404
        assert anon.get("/redoc").status_code == 404
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert strict_policy(page), page.headers.get("content-security-policy")
    assert foreign(page.text, api_server) == []
    listed = set(re.findall(r'data-operation="([A-Z]+) ([^"]+)"', page.text))
    assert listed == {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert 'href="/openapi.json"' in page.text
    # Fields of a request body, with their descriptions, and parameters are shown.
    assert "Case reference; recorded in the audit." in page.text
    assert "after_id" in page.text and "probe image" in page.text


def test_no_page_refers_to_another_origin(api_server: Server, search_id: int) -> None:
    pages: dict[str | None, list[str]] = {
        None: ["/login", "/docs", "/static/app.css", "/static/app.js"],
        "analyst": ["/search", f"/searches/{search_id}", "/cases/DOCS-1/report",
                    "/searches/999999"],
        "reviewer": ["/review", f"/review/{search_id}"],
        "auditor": ["/audit"],
        "admin": ["/sources", "/rights", "/subject-access"],
    }
    seen = 0
    for user, paths in pages.items():
        client = logged_in(api_server, user) if user else httpx.Client(base_url=api_server.url)
        with client as browser:
            for path in paths:
                response = browser.get(path)
                assert response.status_code in (200, 404), (user, path, response.status_code)
                kind = response.headers["content-type"]
                assert foreign(response.text, api_server, kind) == [], (user, path)
                if kind.startswith("text/html"):
                    assert strict_policy(response), (user, path)
                    seen += 1
    assert seen == 12  # every page but the two static files
