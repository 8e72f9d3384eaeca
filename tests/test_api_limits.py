"""Upload size, pixel and search rate limits: each a setting, each with its own error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import FACES, PEOPLE
from webserver import Server, serve_copy

SMALL = PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg"  # 46 kB, 334 x 640 = 213,760 px
WIDE = FACES / "group" / "two_people.jpg"  # 61 kB, 640 x 376 = 240,640 px
HEAVY = FACES / "group" / "kit_with_rose.jpg"  # 89 kB


@pytest.fixture(scope="module")
def server(gallery_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve_copy(
        gallery_home, tmp_path_factory.mktemp("limits"),
        FACETRAIL_MAX_UPLOAD_BYTES="70000", FACETRAIL_MAX_PIXELS="230000",
        FACETRAIL_SEARCH_RATE="2", FACETRAIL_SEARCH_RATE_WINDOW="600",
    )


def post_probe(server: Server, path: Path, user: str = "analyst") -> tuple[int, str]:
    with server.client(user) as client:
        response = client.post("/api/probes", files={"file": (path.name, path.read_bytes())})
    code = response.json()["error"]["code"] if response.status_code >= 400 else ""
    return response.status_code, code


def test_uploads_over_the_byte_limit_get_413(server: Server) -> None:
    assert post_probe(server, HEAVY) == (413, "upload_too_large")
    with server.client("analyst") as client:
        # Declared too large: refused before the body is read.
        huge = client.post("/api/probes", files={"file": ("big.jpg", b"\xff" * 300_000)})
        assert huge.status_code == 413
        assert "FACETRAIL_MAX_UPLOAD_BYTES" in huge.json()["error"]["message"]
        one_step = client.post("/api/searches/upload", files={"file": (HEAVY.name,
                               HEAVY.read_bytes())}, data={"case_ref": "L", "purpose": "l"})
        assert one_step.status_code == 413


def test_images_over_the_pixel_limit_get_422(server: Server) -> None:
    assert post_probe(server, WIDE) == (422, "image_too_large")
    assert post_probe(server, SMALL) == (201, "")


def test_searches_over_the_rate_get_429_per_user(server: Server) -> None:
    with server.client("analyst") as client:
        sha = client.post("/api/probes", files={"file": (SMALL.name, SMALL.read_bytes())})
        body = {"probe_sha256": sha.json()["probe"]["sha256"], "case_ref": "L", "purpose": "l"}
        assert [client.post("/api/searches", json=body).status_code for _ in range(2)] == [
            201, 201]
        refused = client.post("/api/searches", json=body)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 0 < int(refused.headers["retry-after"]) <= 600
        listed = client.get("/api/searches", params={"case": "L"}).json()["searches"]
        assert len(listed) == 2  # the refused search was neither run nor kept
    with server.client("analyst2") as other:
        assert other.post("/api/searches", json=body).status_code == 201
    with server.client("auditor") as auditor:
        events = auditor.get("/api/audit", params={"case": "L", "action": "search"}).json()
    assert [e["actor"] for e in events["events"]] == ["analyst", "analyst", "analyst2"]
