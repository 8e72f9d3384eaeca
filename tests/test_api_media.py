"""Media is served only from what the store holds, looked up by hash, never by a path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import PEOPLE, add_source, run_cli
from facetrail.imaging import sha256_hex
from stores import raw_sql, store_url_of
from webserver import Server, serve_copy

PROBE = PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg"


@pytest.fixture(scope="module")
def server(gallery_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve_copy(gallery_home, tmp_path_factory.mktemp("media"))


def test_paths_in_requests_never_reach_the_file_system(server: Server) -> None:
    hostname = Path("/etc/hostname")
    with server.client("analyst") as client:
        for url in ("/api/images/..%2F..%2F..%2Fetc%2Fpasswd", "/api/images/../../etc/passwd",
                    "/api/images/%2Fetc%2Fpasswd", "/api/faces/..%2F1/crop",
                    "/api/probes/..%2Fprobes/image", "/api/images/ABC"):
            response = client.get(url)
            assert response.status_code in (404, 422), url
            if response.url.path.startswith("/api/"):  # not "../../etc/passwd": the client
                # resolves its dots first, and a page's 404 is a page
                assert response.headers["content-type"] == "application/json", url
        if hostname.exists():
            sha = sha256_hex(hostname.read_bytes())
            assert client.get(f"/api/images/{sha}").status_code == 404
        assert client.get(f"/api/images/{'0' * 64}").json()["error"]["code"] == "not_found"
        assert client.get("/api/faces/99999999/crop").status_code == 404


def test_a_location_outside_the_registered_paths_is_never_read(
    server: Server, tmp_path: Path
) -> None:
    """Even a store edited to point at another file (with its hash) serves nothing."""
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(PROBE.read_bytes()[:-10] + b"secret!!!!")
    sha = sha256_hex(secret.read_bytes())
    db = store_url_of(server.home)
    (image_id, face_id), = raw_sql(db, "SELECT image_id, id FROM faces ORDER BY id DESC LIMIT 1")
    raw_sql(db, f"UPDATE images SET sha256='{sha}' WHERE id={image_id}",
            f"UPDATE appearances SET location='{secret}' WHERE image_id={image_id}")
    with server.client("reviewer") as client:
        for url in (f"/api/images/{sha}", f"/api/images/{sha}/thumb", f"/api/faces/{face_id}/crop"):
            response = client.get(url)
            assert response.status_code == 404, url
            assert b"secret" not in response.content
            assert "no longer readable" in response.json()["error"]["message"]


def test_bytes_that_no_longer_match_their_hash_are_not_served(server: Server) -> None:
    """A location inside the source whose bytes are not the image's: refused."""
    url = store_url_of(server.home)
    (image_a, _, sha_a), (_, location_b, _) = raw_sql(
        url, "SELECT a.image_id, a.location, i.sha256 FROM appearances a"
        " JOIN images i ON i.id = a.image_id ORDER BY a.id LIMIT 2")
    raw_sql(url, f"UPDATE appearances SET location='{location_b}' WHERE image_id={image_a}")
    with server.client("analyst") as client:
        assert client.get(f"/api/images/{sha_a}").status_code == 404


def test_images_of_a_manifest_source_are_served(server: Server, tmp_path: Path) -> None:
    """A manifest's rows name files in its folder: they are read back from there, though the
    source's registered path is the manifest file itself."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    photo = folder / "obama.jpg"
    photo.write_bytes(PROBE.read_bytes() + b"manifest copy")  # a new image, not a duplicate
    manifest = folder / "inbox.csv"
    manifest.write_text("path,source_url\nobama.jpg,https://example.org/obama.jpg\n")
    add_source(server.home, "inbox-manifest", manifest, kind="manifest")
    run_cli(server.home, "ingest", "inbox-manifest")
    sha = sha256_hex(photo.read_bytes())
    (face_id,), = raw_sql(store_url_of(server.home), "SELECT f.id FROM faces f JOIN images i"
                          f" ON i.id = f.image_id WHERE i.sha256 = '{sha}' LIMIT 1")
    with server.client("analyst") as client:
        for url in (f"/api/images/{sha}", f"/api/images/{sha}/thumb", f"/api/faces/{face_id}/crop"):
            response = client.get(url)
            assert response.status_code == 200, (url, response.text)
            assert response.headers["content-type"] == "image/jpeg"
