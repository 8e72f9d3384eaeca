"""Upload size, pixel and search rate limits: each a setting, each with its own error."""

from __future__ import annotations

import socket
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


BODY_LIMIT = 70000 + 64 * 1024
"""The limits server's upload limit and the room allowed for the multipart framing."""
BOUNDARY = "facetrail-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
FILE_HEAD = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
             "Content-Type: image/jpeg\r\n\r\n").encode()
FILE_TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def new_analyst(server: Server, name: str) -> str:
    """The token of a new analyst, whose rate counts start at nothing."""
    with server.client("admin") as admin:
        response = admin.post("/api/users", json={"name": name, "role": "analyst"})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def exchange(server: Server, head: str, body: bytes) -> bytes:
    """Send a request's head and the start of its body but never the end of it; the server's
    answer, read until it closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(head.encode() + body)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except TimeoutError:
            raise AssertionError(f"the server waited for the rest of the body: {reply!r}") from None
    return reply


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


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
    assert post_probe(server, WIDE, "analyst2") == (422, "image_too_large")
    assert post_probe(server, SMALL, "analyst2") == (201, "")


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


def test_a_chunked_upload_is_refused_as_soon_as_it_is_over_the_limit(server: Server) -> None:
    """No Content-Length to refuse by: the bytes are counted as they arrive, and the server
    answers 413 and closes the connection at the limit instead of reading on."""
    head = (f"POST /api/probes HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {server.tokens['analyst']}\r\n"
            f"Content-Type: {MULTIPART}\r\nTransfer-Encoding: chunked\r\n\r\n")
    over = chunk(FILE_HEAD) + b"".join(chunk(b"\xff" * 8000) for _ in range(BODY_LIMIT // 8000 + 1))
    reply = exchange(server, head, over)  # the body's last chunk never comes
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert b'"upload_too_large"' in reply and b"FACETRAIL_MAX_UPLOAD_BYTES" in reply

    total, sent = 64 * 1024 * 1024, 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        yield FILE_HEAD
        while sent < total:
            sent += 65536
            yield b"\xff" * 65536
        yield FILE_TAIL

    with server.client("analyst") as client:  # httpx sends a generator chunked
        refused = client.post("/api/probes", content=endless(), headers={"Content-Type": MULTIPART})
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "upload_too_large"
    assert sent < total // 4, f"the server took {sent} bytes before refusing"

    def photo() -> Iterator[bytes]:
        yield from (FILE_HEAD, SMALL.read_bytes(), FILE_TAIL)

    with server.client(token=new_analyst(server, "streamer")) as client:
        kept = client.post("/api/probes", content=photo(), headers={"Content-Type": MULTIPART})
    assert kept.status_code == 201, kept.text


def test_a_body_without_valid_credentials_is_refused_unread(server: Server) -> None:
    """401 (or the login page) before the body is read: only its first bytes are ever sent."""
    host = f"Host: 127.0.0.1:{server.port}\r\n"
    for credentials in ("", "Authorization: Bearer ft_wrong\r\n",
                        "Cookie: facetrail_session=ended\r\n"):
        for path in ("/api/probes", "/api/searches/upload"):
            declared = (f"POST {path} HTTP/1.1\r\n{host}{credentials}Content-Type: {MULTIPART}"
                        f"\r\nContent-Length: {BODY_LIMIT - 1000}\r\n\r\n")
            reply = exchange(server, declared, FILE_HEAD)
            assert reply.startswith(b"HTTP/1.1 401 "), (path, credentials, reply[:200])
            assert b'"unauthorized"' in reply
            chunked = (f"POST {path} HTTP/1.1\r\n{host}{credentials}Content-Type: {MULTIPART}"
                       f"\r\nTransfer-Encoding: chunked\r\n\r\n")
            assert exchange(server, chunked, chunk(FILE_HEAD)).startswith(b"HTTP/1.1 401 ")
        page = (f"POST /search HTTP/1.1\r\n{host}{credentials}Content-Type: {MULTIPART}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")
        reply = exchange(server, page, chunk(FILE_HEAD))
        assert reply.startswith(b"HTTP/1.1 303 ") and b"location: /login" in reply.lower()
    # The logins read their body without credentials: it is a token, a few bytes at most.
    for path, kind in (("/login", "application/x-www-form-urlencoded"),
                       ("/api/session", "application/json")):
        login = (f"POST {path} HTTP/1.1\r\n{host}Content-Type: {kind}\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n")
        reply = exchange(server, login, chunk(b"t" * 70_000))
        assert reply.startswith(b"HTTP/1.1 413 "), (path, reply[:200])


def test_probe_uploads_count_against_the_rate_and_are_audited(server: Server) -> None:
    with server.client(token=new_analyst(server, "prober")) as prober:
        answers = [prober.post("/api/probes", files={"file": (SMALL.name, SMALL.read_bytes())})
                   for _ in range(3)]
        assert [a.status_code for a in answers] == [201, 201, 429]
        assert answers[2].json()["error"]["code"] == "rate_limited"
        assert 0 < int(answers[2].headers["retry-after"]) <= 600
        sha = answers[0].json()["probe"]["sha256"]
        # The searches have a count of their own: the two-step search is one search.
        body = {"probe_sha256": sha, "case_ref": "PROBES", "purpose": "rate"}
        assert prober.post("/api/searches", json=body).status_code == 201
    with server.client(token=new_analyst(server, "one-step")) as one_step:
        assert one_step.post("/api/searches/upload", files={"file": (
            SMALL.name, SMALL.read_bytes())}, data={"case_ref": "PROBES", "purpose": "rate"}
        ).status_code == 201
    with server.client("auditor") as auditor:
        def probe_events(actor: str) -> list[dict[str, object]]:
            events = auditor.get("/api/audit", params={"actor": actor, "action": "probe.add"})
            return [e["details"] for e in events.json()["events"]]

        # Who, which photo and how many faces; never the photo itself.
        kept = {"sha256": sha, "faces": 1, "bytes": SMALL.stat().st_size}
        assert probe_events("prober") == [kept, kept]
        assert probe_events("one-step") == [kept]
