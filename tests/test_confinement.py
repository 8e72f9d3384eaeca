"""Confinement (``facetrail.sources.confine``): an ingest reads only inside its source's
folder, a source cannot be rooted at ``/`` or in a system folder, a link out of a folder
source is an ``outside_source`` error (never opened), a manifest's rows are held to the same
rule, and so is every byte read back to serve an image."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import PEOPLE, WARCS, add_source, cli_json, run_cli
from facetrail.engine import Facetrail
from facetrail.errors import OutsideSourceError
from facetrail.imaging import sha256_hex
from facetrail.records import Located, SourceFailure
from facetrail.sources import make_source, never_seen
from facetrail.sources.readback import image_bytes, read_at
from webserver import Server, add_users

PHOTOS = sorted(PEOPLE.glob("*/*.jpg"))


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A folder source with two photos and links out of it (to /etc/passwd, to a photo
    outside, to a folder outside), and that outside folder."""
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    shutil.copy(PHOTOS[0], inside / "a.jpg")
    (inside / "sub").mkdir()
    shutil.copy(PHOTOS[1], inside / "sub" / "b.jpg")
    shutil.copy(PHOTOS[2], outside / "c.jpg")
    (inside / "passwd.jpg").symlink_to("/etc/passwd")
    (inside / "c.jpg").symlink_to(outside / "c.jpg")
    (inside / "sub" / "same.jpg").symlink_to(inside / "a.jpg")  # inside: fine
    return inside, outside


def test_links_out_of_a_folder_source_are_errors_never_opened(
    layout: tuple[Path, Path]
) -> None:
    inside, _ = layout
    items = list(make_source("folder").items(inside, never_seen))
    failures = {Path(i.location).name: i.code for i in items if isinstance(i, SourceFailure)}
    assert failures == {"c.jpg": "outside_source", "passwd.jpg": "outside_source"}
    read = sorted(Path(i.at.path).name for i in items if not isinstance(i, SourceFailure))
    assert read == ["a.jpg", "b.jpg", "same.jpg"]
    # A worker checks again when it reads (a file swapped for a link after it was listed).
    with pytest.raises(OutsideSourceError):
        read_at(Located(str(inside / "passwd.jpg"), roots=(str(inside),)))


def test_cli_ingest_is_confined_to_the_source(tmp_path: Path, layout: tuple[Path, Path]
                                              ) -> None:
    inside, outside = layout
    home = tmp_path / "home"
    add_source(home, "coll", inside)
    report = cli_json(home, "ingest", "coll")
    assert isinstance(report, dict) and report["images_new"] == 2 and report["errors"] == 2
    errors = cli_json(home, "errors", "--source", "coll")
    assert isinstance(errors, list)
    assert sorted((Path(e["location"]).name, e["code"]) for e in errors) == [
        ("c.jpg", "outside_source"), ("passwd.jpg", "outside_source")]
    # A path outside the source is refused before anything is read.
    for target in (outside, Path("/etc"), inside / ".." / "outside"):
        refused = run_cli(home, "ingest", str(target), "--source", "coll", check=False)
        assert refused.returncode == 2, refused.stdout
        assert "outside the source's folder" in refused.stderr, refused.stderr


@pytest.mark.parametrize("root", ["/", "/etc", "/proc", "/sys", "/dev", "/etc/ssl"])
def test_a_source_cannot_be_rooted_at_the_root_or_a_system_folder(tmp_path: Path,
                                                                  root: str) -> None:
    refused = run_cli(tmp_path / "home", "sources", "add", "s", "--kind", "folder", "--uri",
                      root, "--lawful-basis", "b", "--purpose", "p", "--retention-days", "30",
                      check=False)
    assert refused.returncode == 2 and "cannot be rooted" in refused.stderr, refused.stderr


def test_manifest_rows_outside_its_folder_are_errors(tmp_path: Path) -> None:
    folder, elsewhere = tmp_path / "m", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    shutil.copy(PHOTOS[0], folder / "a.jpg")
    shutil.copy(PHOTOS[1], elsewhere / "b.jpg")
    (folder / "link.jpg").symlink_to(elsewhere / "b.jpg")
    rows = [{"path": "a.jpg"}, {"path": "/etc/shadow"}, {"path": "../elsewhere/b.jpg"},
            {"path": str(elsewhere / "b.jpg")}, {"path": "link.jpg"}]
    manifest = folder / "list.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = list(make_source("manifest").items(manifest, never_seen))
    assert [getattr(i, "code", "ok") for i in items] == [
        "ok", "outside_source", "outside_source", "outside_source", "outside_source"]
    assert "/etc/shadow" in items[1].location  # type: ignore[union-attr]


def test_images_of_a_manifest_source_are_read_back_from_its_folder(
    gallery: Facetrail, tmp_path: Path
) -> None:
    """Read back inside the manifest's folder (not only the manifest file itself)."""
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(PHOTOS[3], folder / "a.jpg")
    (folder / "list.csv").write_text("path,source_url\na.jpg,https://example.org/a.jpg\n")
    gallery.add_source("mani", "manifest", folder / "list.csv", lawful_basis="b",
                       purpose="p", retention_days=30)
    gallery.ingest("mani")
    data = (folder / "a.jpg").read_bytes()
    assert image_bytes(gallery.store, sha256_hex(data)) == data


def test_archives_linked_into_a_warc_folder_from_outside_are_errors(tmp_path: Path) -> None:
    folder = tmp_path / "archives"
    folder.mkdir()
    archive = next(WARCS.glob("*.warc.gz"))
    (folder / "linked.warc.gz").symlink_to(archive)
    items = list(make_source("warc").items(folder, never_seen))
    assert [(Path(i.location).name, i.code) for i in items  # type: ignore[union-attr]
            ] == [("linked.warc.gz", "outside_source")]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    home = tmp_path / "home"
    server = Server(home, add_users(home)).start()
    try:
        yield server
    finally:
        server.stop()


def test_api_sources_and_jobs_are_confined(server: Server, layout: tuple[Path, Path]) -> None:
    inside, outside = layout
    spec = {"name": "coll", "kind": "folder", "lawful_basis": "b", "purpose": "p",
            "retention_days": 30}
    with server.client("admin") as admin:
        for root in ("/", "/etc"):
            refused = admin.post("/api/sources", json={**spec, "uri": root})
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["code"] == "policy_error"
        assert admin.post("/api/sources", json={**spec, "uri": str(inside)}).status_code == 201
        for paths in ([str(outside)], ["/etc/passwd"], [str(inside / ".." / "outside")]):
            refused = admin.post("/api/jobs", json={"source": "coll", "paths": paths})
            assert refused.status_code == 422, refused.text
            assert "outside the source's folder" in refused.json()["error"]["message"]
        assert admin.get("/api/jobs").json()["jobs"] == []
