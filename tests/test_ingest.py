"""Ingest through the CLI: dedup with exact provenance, idempotence, bad input, kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from conftest import PEOPLE, WARCS, add_source, cli_json, kill_a_worker, run_cli
from facetrail.store import AuditQuery, Store, open_store
from stores import own_store, store_url_of

ASHANTI = PEOPLE / "Ashanti" / "Ashanti_0001.jpg"


@dataclass(frozen=True)
class Snapshot:
    """Everything an ingest produces, independent of row ids and times."""

    images: int
    images_without_faces: int
    appearances: int
    faces: list[tuple[object, ...]]
    """(image sha256, width, height, box, embedding bytes) of every face, sorted."""
    seen_at: list[tuple[object, ...]]
    """(image sha256, source, location, source url, page urls, capture time) of every image
    with a face, sorted."""
    errors: list[tuple[str, str]]
    """(location, code) of every ingest error, sorted."""


def snapshot(home: Path, url: str | None = None) -> Snapshot:
    """What ``home``'s store (or the store ``url`` names) holds, independent of its ids."""
    store = open_store(url or store_url_of(home))
    try:
        (model_id, _, _), = store.models()
        chunks = list(store.iter_embeddings(model_id))
        rows = store.faces([int(i) for ids, _ in chunks for i in ids])
        vectors = {int(i): v.tobytes() for ids, vs in chunks for i, v in zip(ids, vs, strict=True)}
        stats = store.stats(model_id)
        errors = sorted((e.location, e.code) for e in store.errors())
    finally:
        store.close()
    return Snapshot(
        images=stats.images, images_without_faces=stats.images_without_faces,
        appearances=stats.appearances,
        faces=sorted((f.image.sha256, f.image.width, f.image.height, f.box, vectors[i])
                     for i, f in rows.items()),
        seen_at=sorted({(f.image.sha256, a.source, a.location, a.source_url, a.page_urls,
                         a.captured_at) for f in rows.values() for a in f.appearances}),
        errors=errors,
    )


def committed_images(store: Store) -> int:
    return sum(store.image_count(model_id) for model_id, _, _ in store.models())


def test_same_bytes_in_many_places_are_stored_once_with_every_appearance(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        shutil.copy(ASHANTI, photos / name)
    home = tmp_path / "home"
    add_source(home, "s", photos)
    report = cli_json(home, "ingest", "s")
    assert isinstance(report, dict)
    assert (report["items"], report["images_new"], report["duplicates"], report["faces"]) == (
        3, 1, 2, 1)
    snap = snapshot(home)
    assert (snap.images, snap.appearances, len(snap.faces)) == (1, 3, 1)
    assert [a[2] for a in snap.seen_at] == [
        str(photos / "a.jpg"), str(photos / "b.jpg"), str(photos / "sub" / "c.jpg")]

    out = cli_json(home, "search", str(ASHANTI), "--case", "c", "--purpose", "p")
    assert isinstance(out, dict)
    (best,) = out["candidates"]
    assert [a["location"] for a in best["appearances"]] == [
        str(photos / "a.jpg"), str(photos / "b.jpg"), str(photos / "sub" / "c.jpg")]

    # Re-ingesting adds nothing, and skips every unchanged file without decoding it.
    before = snapshot(home)
    again = cli_json(home, "ingest", "s")
    assert isinstance(again, dict)
    assert (again["images_new"], again["duplicates"], again["skipped"], again["items"]) == (
        0, 0, 3, 3)
    assert snapshot(home) == before


def test_extra_path_joins_an_existing_source(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first, more = tmp_path / "coll" / "first", tmp_path / "coll" / "more"
    first.mkdir(parents=True)
    add_source(home, "s", tmp_path / "coll")
    shutil.copy(ASHANTI, first / "x.jpg")
    run_cli(home, "ingest", "s")
    more.mkdir()
    shutil.copy(ASHANTI, more / "y.jpg")
    shutil.copy(PEOPLE / "Ashanti" / "Ashanti_0002.jpg", more / "z.jpg")
    report = cli_json(home, "ingest", str(more), "--source", "s")
    assert isinstance(report, dict)
    assert (report["images_new"], report["duplicates"]) == (1, 1)
    stats = cli_json(home, "stats")
    assert isinstance(stats, dict)
    assert (stats["images"], stats["appearances"], stats["faces"]) == (2, 3, 2)


def test_bad_inputs_are_recorded_and_never_stop_a_run(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(ASHANTI, photos / "good.jpg")
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "text.jpg").write_text("hello, I am not a photo\n")
    (photos / "truncated.jpg").write_bytes(PEOPLE.joinpath(
        "Barack_Obama", "Barack_Obama_0001.jpg").read_bytes()[:5000])
    from PIL import Image

    Image.new("1", (9000, 9000)).save(photos / "bomb.png")
    home = tmp_path / "home"
    add_source(home, "s", photos)
    # Archives in the folder are read only when given by path (a folder lists images).
    cut = photos / "cut.warc.gz"
    cut.write_bytes((WARCS / "flashfrozen-jwat-recompressed.warc.gz").read_bytes()[:200_000])
    report = cli_json(home, "ingest", str(cut), "--source", "s")
    assert isinstance(report, dict) and report["errors"] >= 1 and report["images_new"] >= 5
    blackbook = "IAH-20080430204825-00000-blackbook-truncated.warc.gz"
    shutil.copy(WARCS / blackbook, photos / blackbook)
    report = cli_json(home, "ingest", str(photos / blackbook), "--source", "s")
    assert isinstance(report, dict) and report["images_new"] == 2 and report["errors"] == 1
    report = cli_json(home, "ingest", "s")
    assert isinstance(report, dict)
    assert (report["images_new"], report["faces"], report["errors"]) == (1, 1, 4)

    errors = cli_json(home, "errors", "--source", "s")
    assert isinstance(errors, list)
    by_name = {Path(e["location"].split("#")[0]).name: e for e in errors}
    assert by_name["empty.jpg"]["reason"] == "empty file (0 bytes)"
    assert "not a recognised image" in by_name["text.jpg"]["reason"]
    assert by_name["truncated.jpg"]["code"] == "bad_image"
    assert by_name["bomb.png"]["code"] == "image_too_large"
    assert any(
        e["location"].startswith(str(cut) + "#") and e["code"] == "bad_archive"
        and "truncated" in e["reason"]
        for e in errors
    )
    assert "minimum side" in by_name[
        "IAH-20080430204825-00000-blackbook-truncated.warc.gz"]["reason"]
    human = run_cli(home, "errors").stdout
    assert "empty.jpg" in human and "bomb.png" in human

    # Fixing a file clears its error on the next run.
    shutil.copy(ASHANTI.with_name("Ashanti_0003.jpg"), photos / "empty.jpg")
    cli_json(home, "ingest", "s")
    remaining = cli_json(home, "errors", "--source", "s")
    assert isinstance(remaining, list)
    assert "empty.jpg" not in {Path(e["location"]).name for e in remaining}


def test_warc_face_comes_back_with_its_url_and_page(tmp_path: Path) -> None:
    home = tmp_path / "home"
    add_source(home, "wiki", WARCS / "flashfrozen-jwat-recompressed.warc.gz", kind="warc")
    report = cli_json(home, "ingest", "wiki")
    assert isinstance(report, dict) and report["faces"] >= 2
    # The probe: the Mona Lisa thumbnail, as a user would have saved it from the page.
    from facetrail.records import ImageRecord
    from facetrail.sources import make_source, never_seen

    url = ("http://upload.wikimedia.org/wikipedia/commons/thumb/f/f9/Mona_Lisa,_by_Leonardo_da_"
           "Vinci,_from_C2RMF_natural_color.jpg/250px-Mona_Lisa,_by_Leonardo_da_Vinci,_from_"
           "C2RMF_natural_color.jpg")
    (record,) = [
        i for i in make_source("warc").items(WARCS / "flashfrozen-jwat-recompressed.warc.gz",
                                             never_seen)
        if isinstance(i, ImageRecord) and i.provenance.source_url == url
    ]
    probe = tmp_path / "probe.jpg"
    probe.write_bytes(record.data)
    out = cli_json(home, "search", str(probe), "--case", "c", "--purpose", "p")
    assert isinstance(out, dict)
    best = out["candidates"][0]
    assert best["score"] > 0.99
    (seen,) = best["appearances"]
    assert seen["source_url"] == url
    assert seen["page_url"] == "http://en.wikipedia.org/wiki/Mona_Lisa"
    assert seen["captured_at"] == "2013-01-03T20:35:45Z"
    assert seen["location"].endswith("flashfrozen-jwat-recompressed.warc.gz#141474")


def test_kill_9_mid_ingest_then_resume_equals_a_clean_run(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for person in sorted(PEOPLE.iterdir())[:12]:
        shutil.copytree(person, photos / person.name)
    shutil.copy(ASHANTI, photos / "dup-of-ashanti.jpg")

    clean = tmp_path / "clean"
    add_source(clean, "s", photos)
    run_cli(clean, "ingest", "s")
    expected = snapshot(clean)
    assert expected.images > 40

    home = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    env.update(own_store(home))
    add_source(home, "s", photos)
    proc = subprocess.Popen(
        [sys.executable, "-m", "facetrail", "--home", str(home), "ingest", "s"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    store = open_store(store_url_of(home))
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if committed_images(store) >= 10:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the ingest finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the main process and its workers, no clean-up
        proc.wait()
        partial = snapshot(home)
        assert 10 <= partial.images < expected.images

        report = cli_json(home, "ingest", "s")
        assert isinstance(report, dict) and report["images_new"] > 0
        assert snapshot(home) == expected
        assert [r.status for r in store.runs()] == ["interrupted", "completed"]
    finally:
        store.close()
    # The index caught up with the store on the first search.
    stats = cli_json(home, "stats")
    assert isinstance(stats, dict)
    assert stats["index_faces"] == stats["faces"] == len(expected.faces)
    assert json.loads(json.dumps(stats["per_source"]))[0]["errors"] == 0


def test_a_worker_killed_mid_run_costs_nothing(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for person in sorted(PEOPLE.iterdir())[6:30]:
        shutil.copytree(person, photos / person.name)
    clean = tmp_path / "clean"
    add_source(clean, "s", photos)
    run_cli(clean, "ingest", "s")

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    env.update(own_store(home))
    add_source(home, "s", photos)
    proc = subprocess.Popen(
        [sys.executable, "-m", "facetrail", "--home", str(home), "--workers", "2", "ingest",
         "s", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    store = open_store(store_url_of(home))
    try:
        killed = kill_a_worker(proc, lambda: committed_images(store) >= 3)
    finally:
        store.close()
    out, err = proc.communicate(timeout=300)
    assert killed, "no worker could be killed"
    assert proc.returncode == 0, err
    assert json.loads(out)["errors"] == 0
    assert snapshot(home) == snapshot(clean)


def test_archive_error_clears_once_a_whole_copy_is_ingested(tmp_path: Path) -> None:
    whole = (WARCS / "flashfrozen-jwat-recompressed.warc.gz").read_bytes()
    archive = tmp_path / "capture.warc.gz"
    archive.write_bytes(whole[:200_000])
    home = tmp_path / "home"
    add_source(home, "w", archive, kind="warc")
    cli_json(home, "ingest", "w")
    errors = cli_json(home, "errors")
    assert isinstance(errors, list)
    assert [e["code"] for e in errors if "#after-" in e["location"]] == ["bad_archive"]

    archive.write_bytes(whole)
    cli_json(home, "ingest", "w")
    errors = cli_json(home, "errors")
    assert isinstance(errors, list)
    assert not [e for e in errors if e["code"] == "bad_archive"]


def test_a_source_that_yields_nothing_is_an_error_and_exit_1(tmp_path: Path) -> None:
    """Unreadable archives, and a folder with no image, never read as "0 items, 0 errors"."""
    archives = tmp_path / "archives"
    archives.mkdir()
    (archives / "text.warc").write_text("hello, I am not a web archive\n" * 20)
    whole = (WARCS / "flashfrozen-jwat-recompressed.warc.gz").read_bytes()
    (archives / "cut.warc.gz").write_bytes(whole[:300])  # inside its first record
    (archives / "header.warc").write_bytes(b"WARC/1.0\r\nWARC-Type: warcinfo\r\n\r\n")
    home = tmp_path / "home"
    add_source(home, "w", archives, kind="warc")
    proc = run_cli(home, "ingest", "w", check=False)
    assert proc.returncode == 1, proc.stderr
    assert "3 items" in proc.stdout and "3 errors" in proc.stdout
    assert "nothing was ingested from 'w'" in proc.stderr and "Traceback" not in proc.stderr
    errors = cli_json(home, "errors", "--source", "w")
    assert isinstance(errors, list)
    by_name = {Path(e["location"].split("#")[0]).name: e for e in errors}
    assert by_name["text.warc"]["reason"].startswith("not a WARC file")
    assert "truncated" in by_name["cut.warc.gz"]["reason"]
    assert by_name["header.warc"]["code"] == "empty_source"
    assert not [e for e in errors if "NoneType" in e["reason"]]

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no photo here")
    add_source(home, "e", empty)
    proc = run_cli(home, "ingest", "e", "--json", check=False)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["errors"] == 1
    (error,) = cli_json(home, "errors", "--source", "e")  # type: ignore[misc]
    assert (error["location"], error["code"]) == (str(empty), "empty_source")
    assert "no image file" in error["reason"]

    # Once something is there, the error goes and the exit is 0.
    shutil.copy(ASHANTI, empty / "sub" / "a.jpg")
    assert cli_json(home, "ingest", "e")["images_new"] == 1  # type: ignore[index]
    assert cli_json(home, "errors", "--source", "e") == []


def test_ctrl_c_stops_cleanly_says_how_to_resume_and_is_audited(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group, workers included, as in a terminal."""
    photos = tmp_path / "photos"
    for person in sorted(PEOPLE.iterdir())[:12]:
        shutil.copytree(person, photos / person.name)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    env.update(own_store(home))
    add_source(home, "s", photos)
    proc = subprocess.Popen(
        [sys.executable, "-m", "facetrail", "--home", str(home), "--workers", "2", "ingest",
         "s"], env=env, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        # As in a terminal: tests started in the background (`cmd &` in a script) ignore
        # SIGINT, and Python keeps an ignored SIGINT ignored, in children too.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    store = open_store(store_url_of(home))
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if committed_images(store) >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the ingest finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
        assert "interrupted" in err and "run the same command again" in err
        kept = committed_images(store)
        assert f"{kept} new image(s)" in err
        (run,) = store.runs()
        assert run.status == "interrupted" and run.counts.images_new == kept
        (event,) = [e.event for e in store.audit_rows(AuditQuery(action="ingest"))]
        assert event.details["status"] == "interrupted" and event.details["run_id"] == run.id
        assert event.details["images_new"] == kept
    finally:
        store.close()
    report = cli_json(home, "ingest", "s")
    assert isinstance(report, dict) and report["images_new"] + kept == len(
        list(photos.rglob("*.jpg")))
