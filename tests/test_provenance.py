"""Provenance that stays true: what a re-ingest no longer finds is gone, with a date, and a
search leaves it out unless asked for history (docs/provenance.md)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from conftest import PEOPLE, WARCS, add_source, cli_json, run_cli
from facetrail.imaging import sha256_hex
from facetrail.records import Appearance, ImageRecord
from facetrail.sources import make_source, never_seen
from facetrail.store import ErrorRow, open_store
from stores import own_store, store_url_of
from webserver import Server, add_users

ASHANTI = PEOPLE / "Ashanti" / "Ashanti_0001.jpg"
JOLIE = PEOPLE / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg"
OBAMA = PEOPLE / "Barack_Obama" / sorted(p.name for p in (PEOPLE / "Barack_Obama").iterdir())[0]
ANISTON = PEOPLE / "Jennifer_Aniston" / sorted(
    p.name for p in (PEOPLE / "Jennifer_Aniston").iterdir())[0]
WIKI = WARCS / "flashfrozen-jwat-recompressed.warc.gz"


def sha(path: Path) -> str:
    return sha256_hex(path.read_bytes())


def seen_at(home: Path, image: Path | str) -> list[Appearance]:
    store = open_store(store_url_of(home))
    try:
        return store.image_appearances(image if isinstance(image, str) else sha(image))
    finally:
        store.close()


def current(home: Path, image: Path | str) -> set[str]:
    return {a.location for a in seen_at(home, image) if a.gone_at is None}


def gone(home: Path, image: Path | str) -> set[str]:
    return {a.location for a in seen_at(home, image) if a.gone_at is not None}


def ingest(home: Path, *args: str) -> dict[str, Any]:
    report = cli_json(home, "ingest", *args)
    assert isinstance(report, dict)
    return report


def search(home: Path, probe: Path, *more: str) -> dict[str, dict[str, Any]]:
    """The candidates of a search by image sha256."""
    out = cli_json(home, "search", str(probe), "--case", "c", "--purpose", "p", "--top", "50",
                   *more)
    assert isinstance(out, dict)
    return {c["image"]["sha256"]: c for c in out["candidates"]}


def two_photos_ingested(tmp_path: Path) -> tuple[Path, Path]:
    """(photos, home): folder source 's' of a.jpg (Ashanti) and b.jpg (Jolie), ingested."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(ASHANTI, photos / "a.jpg")
    shutil.copy(JOLIE, photos / "b.jpg")
    home = tmp_path / "home"
    own_store(home)
    add_source(home, "s", photos)
    ingest(home, "s")
    return photos, home


def test_deleted_and_replaced_files_are_gone_and_a_file_back_is_current(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, person in (("a.jpg", ASHANTI), ("b.jpg", JOLIE), ("c.jpg", ANISTON)):
        shutil.copy(person, photos / name)
    home = tmp_path / "home"
    own_store(home)
    add_source(home, "s", photos)
    assert ingest(home, "s")["gone"] == 0

    (photos / "a.jpg").unlink()
    shutil.copy(OBAMA, photos / "b.jpg")
    report = ingest(home, "s")
    assert (report["gone"], report["skipped"], report["images_new"]) == (2, 1, 1)
    assert current(home, ASHANTI) == set()
    assert gone(home, ASHANTI) == {str(photos / "a.jpg")}
    assert current(home, JOLIE) == set() and gone(home, JOLIE) == {str(photos / "b.jpg")}
    assert current(home, OBAMA) == {str(photos / "b.jpg")}
    assert current(home, ANISTON) == {str(photos / "c.jpg")}
    (when,) = [a.gone_at for a in seen_at(home, ASHANTI)]
    assert when is not None and when.endswith("Z")

    # Gone images do not come back from a search, unless it asks for history.
    assert sha(ASHANTI) not in search(home, ASHANTI)
    assert sha(JOLIE) not in search(home, JOLIE)
    found = search(home, ASHANTI, "--history")[sha(ASHANTI)]
    (seen,) = found["appearances"]
    assert (seen["location"], seen["gone_at"]) == (str(photos / "a.jpg"), when)
    text = run_cli(home, "search", str(ASHANTI), "--case", "c", "--purpose", "p",
                   "--history").stdout
    assert f"was in s: {photos / 'a.jpg'} (gone since {when})" in text
    assert f"seen in s: {photos / 'a.jpg'}" not in text
    # The replaced location shows only its new image as current.
    (new,) = search(home, OBAMA)[sha(OBAMA)]["appearances"]
    assert (new["location"], new["gone_at"]) == (str(photos / "b.jpg"), None)
    text = run_cli(home, "search", str(OBAMA), "--case", "c", "--purpose", "p").stdout
    assert f"seen in s: {photos / 'b.jpg'}" in text

    # Marked once: a run that finds nothing new marks nothing again.
    assert ingest(home, "s")["gone"] == 0
    assert [a.gone_at for a in seen_at(home, ASHANTI)] == [when]

    # A file that comes back is current again; the image it replaced is gone.
    shutil.copy(ASHANTI, photos / "a.jpg")
    shutil.copy(JOLIE, photos / "b.jpg")
    report = ingest(home, "s")
    assert (report["gone"], report["images_new"], report["duplicates"]) == (1, 0, 2)
    assert current(home, ASHANTI) == {str(photos / "a.jpg")} and gone(home, ASHANTI) == set()
    assert current(home, JOLIE) == {str(photos / "b.jpg")}
    assert current(home, OBAMA) == set() and gone(home, OBAMA) == {str(photos / "b.jpg")}
    (back,) = search(home, ASHANTI)[sha(ASHANTI)]["appearances"]
    assert back["gone_at"] is None


def test_a_run_on_a_subfolder_marks_nothing_outside_it(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "x").mkdir(parents=True)
    (photos / "xy").mkdir()
    shutil.copy(ASHANTI, photos / "x" / "a.jpg")
    shutil.copy(JOLIE, photos / "xy" / "b.jpg")
    shutil.copy(WIKI, photos / "wiki.warc.gz")
    home = tmp_path / "home"
    own_store(home)
    add_source(home, "s", photos)
    ingest(home, "s")
    ingest(home, str(photos / "wiki.warc.gz"), "--source", "s")
    records = store_locations(home, "s", "wiki.warc.gz#")
    assert records

    (photos / "xy" / "b.jpg").unlink()
    # x is a prefix of xy's name, not a folder holding it.
    assert ingest(home, str(photos / "x"), "--source", "s")["gone"] == 0
    assert current(home, JOLIE) == {str(photos / "xy" / "b.jpg")}
    # Walking the folder does not read the archive in it: its records are not gone.
    assert ingest(home, "s")["gone"] == 1
    assert gone(home, JOLIE) == {str(photos / "xy" / "b.jpg")}
    assert store_locations(home, "s", "wiki.warc.gz#", gone=False) == records


def store_locations(home: Path, source: str, part: str, gone: bool | None = None) -> set[str]:
    """Locations of ``source`` containing ``part`` (only current or gone ones, if told)."""
    store = open_store(store_url_of(home))
    try:
        (model_id, _, _), = store.models()
        faces = store.faces([f.face_id for f in store.source_faces(source, model_id)])
    finally:
        store.close()
    return {a.location for f in faces.values() for a in f.appearances
            if part in a.location and (gone is None or (a.gone_at is not None) == gone)}


def test_an_item_that_fails_to_read_is_not_gone(tmp_path: Path) -> None:
    photos, home = two_photos_ingested(tmp_path)

    (photos / "a.jpg").write_bytes(b"not an image any more")
    report = ingest(home, "s")
    assert (report["errors"], report["gone"]) == (1, 0)
    assert current(home, ASHANTI) == {str(photos / "a.jpg")}
    assert sha(ASHANTI) in search(home, ASHANTI)


def test_a_manifest_row_removed_is_gone(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(ASHANTI, photos / "a.jpg")
    shutil.copy(JOLIE, photos / "b.jpg")
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,source_url\nphotos/a.jpg,http://example.org/a.jpg\n"
                        "photos/b.jpg,http://example.org/b.jpg\n")
    home = tmp_path / "home"
    own_store(home)
    add_source(home, "m", manifest, kind="manifest")
    ingest(home, "m")
    assert current(home, JOLIE) == {str(photos / "b.jpg")}

    manifest.write_text("path,source_url\nphotos/a.jpg,http://example.org/a.jpg\n")
    assert ingest(home, "m")["gone"] == 1
    assert gone(home, JOLIE) == {str(photos / "b.jpg")}  # the file is there; the row is not
    assert current(home, ASHANTI) == {str(photos / "a.jpg")}

    manifest.write_text("path,source_url\nphotos/a.jpg,http://example.org/a.jpg\n"
                        "photos/b.jpg,http://example.org/b.jpg\n")
    assert ingest(home, "m")["gone"] == 0
    assert current(home, JOLIE) == {str(photos / "b.jpg")}


def test_a_web_archive_removed_is_gone_and_its_copy_stays(tmp_path: Path) -> None:
    archives = tmp_path / "archives"
    archives.mkdir()
    shutil.copy(WIKI, archives / "one.warc.gz")
    shutil.copy(WIKI, archives / "two.warc.gz")
    home = tmp_path / "home"
    own_store(home)
    add_source(home, "w", archives, kind="warc")
    ingest(home, "w")
    one = store_locations(home, "w", "one.warc.gz#")
    two = store_locations(home, "w", "two.warc.gz#")
    assert one and len(one) == len(two)

    (archives / "one.warc.gz").unlink()
    report = ingest(home, "w")
    # Every image record of the archive that was ingested (with a face or not) is gone.
    records = {i.provenance.location.rpartition("#")[2]
               for i in make_source("warc").items(WIKI, never_seen)
               if isinstance(i, ImageRecord)}
    failed = {e.location.rpartition("#")[2] for e in errors_of(home, "w")
              if "one.warc.gz#" in e.location}
    assert report["gone"] == len(records - failed) > len(one)
    assert store_locations(home, "w", "one.warc.gz#", gone=True) == one
    assert store_locations(home, "w", "two.warc.gz#", gone=False) == two
    # A search lists only where the images still are.
    image = next(iter(store_faces_of(home, "w")))
    assert current(home, image) and all("two.warc.gz#" in loc for loc in current(home, image))


def errors_of(home: Path, source: str) -> list[ErrorRow]:
    store = open_store(store_url_of(home))
    try:
        return store.errors(source)
    finally:
        store.close()


def store_faces_of(home: Path, source: str) -> set[str]:
    store = open_store(store_url_of(home))
    try:
        (model_id, _, _), = store.models()
        faces = store.faces([f.face_id for f in store.source_faces(source, model_id)])
    finally:
        store.close()
    return {f.image.sha256 for f in faces.values()}


def test_the_http_search_api_asks_for_history(tmp_path: Path) -> None:
    photos, home = two_photos_ingested(tmp_path)
    (photos / "a.jpg").unlink()
    assert ingest(home, "s")["gone"] == 1

    server = Server(home, add_users(home)).start()
    try:
        with server.client("analyst") as analyst:
            probe = analyst.post("/api/probes", files={"file": ("p.jpg", ASHANTI.read_bytes())})
            assert probe.status_code == 201, probe.text
            body = {"probe_sha256": probe.json()["probe"]["sha256"], "case_ref": "H-1",
                    "purpose": "history test", "top": 50}
            plain = analyst.post("/api/searches", json=body)
            assert plain.status_code == 201, plain.text
            images = {c["image"]["sha256"] for c in plain.json()["result"]["candidates"]}
            assert sha(ASHANTI) not in images
            past = analyst.post("/api/searches", json={**body, "history": True})
            assert past.status_code == 201, past.text
            (found,) = [c for c in past.json()["result"]["candidates"]
                        if c["image"]["sha256"] == sha(ASHANTI)]
            (seen,) = found["appearances"]
            assert seen["location"] == str(photos / "a.jpg") and seen["gone_at"]
    finally:
        server.stop()
