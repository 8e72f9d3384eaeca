"""Sources: folders, manifests and web archives yield images with exact provenance: files as
where they lie, archive records as their bytes; a worker reads either back."""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import PEOPLE, WARCS
from facetrail.errors import ManifestError, UnreadableError
from facetrail.records import ImageRecord, ImageRef, Located, SourceFailure
from facetrail.sources import guess_kind, make_source, never_seen
from facetrail.sources.readback import locate, read_at, read_image
from facetrail.sources.warc import embedded_images

MONA_LISA = WARCS / "flashfrozen-jwat-recompressed.warc.gz"
TRUNCATED = WARCS / "IAH-20080430204825-00000-blackbook-truncated.warc.gz"
PAGE = "http://en.wikipedia.org/wiki/Mona_Lisa"


def items(kind: str, path: Path) -> list[ImageRecord | ImageRef | SourceFailure]:
    return list(make_source(kind).items(path, never_seen))


def test_folder_is_recursive_sorted_and_skips_non_images(tmp_path: Path) -> None:
    (tmp_path / "b" / "c").mkdir(parents=True)
    shutil.copy(PEOPLE / "Ashanti" / "Ashanti_0001.jpg", tmp_path / "b" / "c" / "x.JPG")
    shutil.copy(PEOPLE / "Ashanti" / "Ashanti_0002.jpg", tmp_path / "a.jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    got = items("folder", tmp_path)
    assert [Path(i.provenance.location).name for i in got if isinstance(i, ImageRef)] == [
        "a.jpeg", "x.JPG"]
    assert all(isinstance(i, ImageRef)
               and i.at == Located(i.provenance.location, roots=(str(tmp_path),)) for i in got)


def test_folder_skips_unchanged_files(tmp_path: Path) -> None:
    shutil.copy(PEOPLE / "Ashanti" / "Ashanti_0001.jpg", tmp_path / "a.jpg")
    (first,) = items("folder", tmp_path)
    assert isinstance(first, ImageRef) and first.fingerprint
    again = list(make_source("folder").items(tmp_path, lambda loc, fp: fp == first.fingerprint))
    assert again == []


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifest_rows_carry_provenance(tmp_path: Path, fmt: str) -> None:
    photo = PEOPLE / "Ashanti" / "Ashanti_0001.jpg"
    shutil.copy(photo, tmp_path / "one.jpg")
    rows = [
        {"path": "one.jpg", "source_url": "https://example.org/one.jpg",
         "page_url": "https://example.org/page", "captured_at": "2024-01-02T03:04:05Z",
         "title": "One"},
        {"path": "", "source_url": "https://example.org/remote.jpg"},
        {"path": "missing.jpg"},
    ]
    manifest = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        import csv

        with manifest.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "jsonl":
        manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), manifest)
    assert guess_kind(manifest) == "manifest"
    good, remote, missing = items("manifest", manifest)
    assert isinstance(good, ImageRef) and good.context == f"{manifest}:1: "
    assert read_at(good.at) == photo.read_bytes()
    p = good.provenance
    assert (p.location, p.source_url, p.page_urls, p.captured_at, p.title) == (
        str(tmp_path / "one.jpg"), "https://example.org/one.jpg",
        ("https://example.org/page",), "2024-01-02T03:04:05Z", "One")
    assert isinstance(remote, SourceFailure) and "never fetches" in remote.reason
    assert isinstance(missing, SourceFailure) and missing.code == "unreadable"


def test_manifest_without_path_column_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("url\nhttps://example.org/a.jpg\n")
    with pytest.raises(ManifestError, match="'path' column"):
        items("manifest", manifest)


def test_warc_images_have_target_uri_date_and_embedding_page() -> None:
    got = items("warc", MONA_LISA)
    images = [i for i in got if isinstance(i, ImageRecord)]
    assert len(images) == 22 and not [i for i in got if isinstance(i, SourceFailure)]
    by_url = {i.provenance.source_url: i for i in images}
    mona = by_url[
        "http://upload.wikimedia.org/wikipedia/commons/thumb/f/f9/"
        "Mona_Lisa,_by_Leonardo_da_Vinci,_from_C2RMF_natural_color.jpg/"
        "250px-Mona_Lisa,_by_Leonardo_da_Vinci,_from_C2RMF_natural_color.jpg"
    ]
    assert mona.provenance.page_urls == (PAGE,)
    assert mona.provenance.captured_at == "2013-01-03T20:35:45Z"
    assert mona.provenance.location == f"{MONA_LISA}#141474"
    assert mona.provenance.record_id and mona.data[:2] == b"\xff\xd8"
    logo = by_url["http://upload.wikimedia.org/wikipedia/en/b/bc/Wiki.png"]
    assert logo.provenance.page_urls == ()  # a CSS background, not embedded by an <img>


def test_shared_truncated_warc_reads_what_is_there() -> None:
    got = items("warc", TRUNCATED)
    assert [i.provenance.source_url for i in got if isinstance(i, ImageRecord)] == [
        "http://www.archive.org/images/logoc.jpg",
        "http://www.archive.org/images/go-button-gateway.gif",
        "http://www.archive.org/images/star.png",
    ]


def test_warc_cut_mid_record_yields_images_before_it_then_a_failure(tmp_path: Path) -> None:
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(MONA_LISA.read_bytes()[:200_000])  # inside the ARC194219.png member
    got = items("warc", cut)
    failures = [i for i in got if isinstance(i, SourceFailure)]
    images = [i for i in got if isinstance(i, ImageRecord)]
    assert failures and all(f.code == "bad_archive" for f in failures)
    assert failures[-1].location.startswith(f"{cut}#")
    assert 5 <= len(images) < 22


WARC_HEAD = b"WARC/1.0\r\nWARC-Type: warcinfo\r\n\r\n"


@pytest.mark.parametrize(("name", "data", "code", "reason"), [
    ("text.warc", b"hello, I am not a web archive\n" * 20, "bad_archive",
     "not a WARC file: it starts with b'hello"),
    ("photo.warc.gz", (PEOPLE / "Ashanti" / "Ashanti_0001.jpg").read_bytes(), "bad_archive",
     "not a WARC file"),
    ("empty.warc", b"", "bad_archive", "empty file (0 bytes)"),
    ("gzipped-text.warc.gz", gzip.compress(b"hello\n" * 20), "bad_archive",
     "not a WARC file"),
    ("cut.warc.gz", MONA_LISA.read_bytes()[:300], "bad_archive",
     "the next record (a warcinfo record) is truncated"),
    ("header-only.warc", WARC_HEAD, "empty_source", "no image in this archive: 1 record"),
    ("no-content-type.warc",
     b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 3\r\n\r\nabc\r\n\r\n",
     "bad_archive", "archive broken after this offset: the next record cannot be parsed"),
])
def test_an_archive_that_yields_nothing_is_a_failure_with_a_reason(
    tmp_path: Path, name: str, data: bytes, code: str, reason: str
) -> None:
    archive = tmp_path / name
    archive.write_bytes(data)
    (failure,) = items("warc", archive)
    assert isinstance(failure, SourceFailure)
    assert failure.location == f"{archive}#after-0"
    assert (failure.code, failure.reason[:len(reason)]) == (code, reason)
    assert "NoneType" not in failure.reason


def test_an_archive_already_ingested_is_not_taken_for_an_empty_one() -> None:
    assert list(make_source("warc").items(MONA_LISA, lambda p, f: True)) == []


def test_wacz_reads_archives_inside(tmp_path: Path) -> None:
    wacz = tmp_path / "capture.wacz"
    with zipfile.ZipFile(wacz, "w") as zf:
        zf.write(MONA_LISA, "archive/data.warc.gz")
        zf.writestr("datapackage.json", "{}")
    images = [i for i in items("warc", wacz) if isinstance(i, ImageRecord)]
    assert len(images) == 22
    assert images[0].provenance.location.startswith(f"{wacz}!archive/data.warc.gz#")
    assert any(i.provenance.page_urls == (PAGE,) for i in images)


def test_uncompressed_warc(tmp_path: Path) -> None:
    plain = tmp_path / "plain.warc"
    plain.write_bytes(gzip.decompress(MONA_LISA.read_bytes()))
    assert len([i for i in items("warc", plain) if isinstance(i, ImageRecord)]) == 22


def test_embedded_images_resolves_src_srcset_and_base() -> None:
    html = """<html><head><base href="/static/"></head><body>
      <img src="a.jpg"><img srcset="//cdn.example.org/b.jpg 1x, c.jpg 2x">
      <picture><source srcset="d.webp"></picture><img alt="no src"></body></html>"""
    assert embedded_images(html, "https://example.org/x/page.html") == [
        "https://example.org/static/a.jpg", "https://cdn.example.org/b.jpg",
        "https://example.org/static/c.jpg", "https://example.org/static/d.webp"]


def test_warc_cut_inside_a_page_record_is_reported_too(tmp_path: Path) -> None:
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(MONA_LISA.read_bytes()[:60_000])  # inside the first Mona_Lisa page record
    got = items("warc", cut)
    (failure,) = [i for i in got if isinstance(i, SourceFailure)]
    assert failure.location == f"{cut}#after-52670"
    assert PAGE in failure.reason and "truncated" in failure.reason
    assert len([i for i in got if isinstance(i, ImageRecord)]) == 4


def test_a_worker_reads_back_what_a_source_listed(tmp_path: Path) -> None:
    """Archive records by offset, inside a WACZ too, and files; only inside the roots given."""
    wacz = tmp_path / "capture.wacz"
    with zipfile.ZipFile(wacz, "w") as zf:
        zf.write(MONA_LISA, "archive/data.warc.gz")
    for archive in (MONA_LISA, wacz):
        records = [i for i in items("warc", archive) if isinstance(i, ImageRecord)]
        for record in records[::5]:
            place = locate(record.provenance.location)
            assert place is not None and read_at(place) == record.data
    photo = PEOPLE / "Ashanti" / "Ashanti_0001.jpg"
    assert read_image([Located(str(tmp_path / "gone.jpg")), Located(str(photo))]) == (
        photo.read_bytes())
    with pytest.raises(UnreadableError, match="cannot read file: No such file"):
        read_image([Located(str(tmp_path / "gone.jpg"))])
    with pytest.raises(UnreadableError, match="outside its source's folder"):
        read_at(Located(str(photo), roots=(str(tmp_path),)))
    with pytest.raises(UnreadableError, match="changed since"):
        read_image([Located(str(photo))], sha256="0" * 64)
