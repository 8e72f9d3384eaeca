"""Provenance fields from manifests and web archives are checked before they are stored, and
only http(s) URLs are ever shown as links."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
from pathlib import Path

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from conftest import PEOPLE, add_source, cli_json
from facetrail.records import ImageRecord, SourceFailure
from facetrail.sources import fields, make_source, never_seen
from facetrail.sources.fields import FieldError
from facetrail.web.ui import _templates
from stores import own_store

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("url", [
    "https://example.org/a.jpg", "http://example.org:8080/p?q=1#f", "https://[2001:db8::1]/x",
])
def test_web_urls(url: str) -> None:
    assert fields.web_url(url) and fields.url("page_url", url) == url


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "JavaScript:alert(1)", " javascript:alert(1)", "data:text/html,hi",
    "file:///etc/passwd", "//example.org/a.jpg", "/a.jpg", "a.jpg", "https://", "http:///x",
    "https://exa mple.org/", "https://example.org/\u202egpj.exe", "https://example.org/\nX",
    "ftp://example.org/a.jpg", "https://example.org:99999999/", "https://[::1/", "x" * 3000,
])
def test_anything_else_is_refused(url: str) -> None:
    assert not fields.web_url(url)
    with pytest.raises(FieldError, match="page_url .* is not an absolute http"):
        fields.url("page_url", url)


@pytest.mark.parametrize(("given", "stored"), [
    ("2024-02-29", "2024-02-29"),
    ("2024-02-29T13:05:00Z", "2024-02-29T13:05:00Z"),
    ("2024-02-29T13:05:00z", "2024-02-29T13:05:00Z"),
    ("2024-02-29T15:05:00+02:00", "2024-02-29T13:05:00Z"),
    ("2024-03-01T01:00:00+02:00", "2024-02-29T23:00:00Z"),
    ("2024-02-29 13:05", "2024-02-29T13:05:00"),  # no offset: stored as given, not guessed
    ("1839-08-19", "1839-08-19"),
    ("2016", "2016"), ("2016-09", "2016-09"),  # reduced precisions of W3C's profile
    ("2024-02-29T13:05:00.123456Z", "2024-02-29T13:05:00.123456Z"),
])
def test_capture_times_are_stored_in_iso_8601(given: str, stored: str) -> None:
    assert fields.capture_time(given, now=NOW) == stored


@pytest.mark.parametrize("given", [
    "last tuesday", "2024-02-30T25:61:00Z", "2024-02-30", "2024-13-01", "yesterday", "1700-01-01",
    "2027-01-01", "2024-02-29T13:05:00+25:00", "12/03/2024", "2016-13", "2016-00", "1700",
    "２０２４",
])
def test_other_capture_times_are_refused(given: str) -> None:
    with pytest.raises(FieldError, match="captured_at"):
        fields.capture_time(given, now=NOW)


def test_titles_without_control_characters() -> None:
    for good in ("Press photo\tpage 2", "two\nlines", "می\u200cخواهم", "family \U0001f468\u200d"
                 "\U0001f469\u200d\U0001f467", "\u200fשלום"):
        assert fields.title(good) == good
    for bad in ("right\u202eto left", "isolate\u2066x\u2069", "nul\x00", "bell\x07",
                "x" * 501):
        with pytest.raises(FieldError, match="title"):
            fields.title(bad)


def manifest_of(folder: Path, rows: list[dict[str, str]]) -> Path:
    for row in rows:
        if not (folder / row["path"]).exists():
            shutil.copy(PEOPLE / "Ashanti" / "Ashanti_0001.jpg", folder / row["path"])
    manifest = folder / "list.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


BAD_ROWS = [
    {"path": "a.jpg", "captured_at": "last tuesday"},
    {"path": "b.jpg", "captured_at": "2024-02-30T25:61:00Z"},
    {"path": "c.jpg", "page_url": "javascript:alert(document.cookie)"},
    {"path": "d.jpg", "source_url": "data:image/png;base64,AAAA"},
    {"path": "e.jpg", "page_url": "https://example.org/ok|file:///etc/passwd"},
    {"path": "f.jpg", "title": "a\u202eb"},
]


def test_a_row_with_a_bad_field_is_an_error_naming_it(tmp_path: Path) -> None:
    good = {"path": "ok.jpg", "captured_at": "2024-02-29T15:05:00+02:00",
            "page_url": "https://example.org/story"}
    manifest = manifest_of(tmp_path, [good, *BAD_ROWS])
    items = list(make_source("manifest").items(manifest, never_seen))
    assert items[0].provenance.captured_at == "2024-02-29T13:05:00Z"
    failures = items[1:]
    assert all(isinstance(f, SourceFailure) and f.code == "bad_manifest_field" for f in failures)
    reasons = [f.reason for f in failures if isinstance(f, SourceFailure)]
    for word, reason in zip(["captured_at 'last", "captured_at '2024-02-30", "page_url 'java",
                             "source_url 'data:", "page_url 'file:", "title"], reasons,
                            strict=True):
        assert reason.startswith(word), reason
    assert [f.location for f in failures] == [f"{manifest}:{n}" for n in range(2, 8)]


def test_ingest_records_the_rejected_rows_and_takes_them_once_fixed(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    manifest = manifest_of(photos, [{"path": "ok.jpg"}, *BAD_ROWS])
    home = tmp_path / "home"
    own_store(home)
    add_source(home, "m", manifest, kind="manifest")
    report = cli_json(home, "ingest", "m")
    assert isinstance(report, dict)
    assert (report["images_new"], report["errors"]) == (1, len(BAD_ROWS))
    errors = cli_json(home, "errors", "--source", "m")
    assert isinstance(errors, list)
    assert {e["code"] for e in errors} == {"bad_manifest_field"}
    assert any("javascript:alert" in e["reason"] for e in errors)

    manifest_of(photos, [{"path": "ok.jpg"}] + [{"path": row["path"]} for row in BAD_ROWS])
    again = cli_json(home, "ingest", "m")
    assert isinstance(again, dict) and again["errors"] == 0
    assert again["images_new"] + again["duplicates"] == len(BAD_ROWS)


def test_an_archive_record_with_a_bad_warc_date_is_an_error_naming_it(tmp_path: Path) -> None:
    archive = tmp_path / "dates.warc.gz"
    photo = (PEOPLE / "Ashanti" / "Ashanti_0001.jpg").read_bytes()
    with archive.open("wb") as out:
        writer = WARCWriter(out, gzip=True)
        for n, date in enumerate(["2024-02-29T13:05:00Z", "last tuesday", "2999-01-01T00:00:00Z",
                                  "2016-09"]):
            http = StatusAndHeaders("200 OK", [("Content-Type", "image/jpeg")],
                                    protocol="HTTP/1.1")
            record = writer.create_warc_record(
                f"https://example.org/{n}.jpg", "response", payload=io.BytesIO(photo),
                http_headers=http, warc_headers_dict={"WARC-Date": date})
            writer.write_record(record)
            record.raw_stream.close()  # warcio buffers the record in a temporary file
    got = list(make_source("warc").items(archive, never_seen))
    assert [i.provenance.captured_at for i in got if isinstance(i, ImageRecord)] == [
        "2024-02-29T13:05:00Z", "2016-09"]
    failures = [i for i in got if isinstance(i, SourceFailure)]
    assert [f.code for f in failures] == ["bad_archive_field"] * 2
    assert failures[0].reason.startswith("WARC-Date 'last tuesday' is not an ISO 8601")
    assert failures[1].reason.startswith("WARC-Date '2999-01-01T00:00:00Z' is before 1826 or in")
    assert all(f.location.startswith(f"{archive}#") and "after" not in f.location
               for f in failures)


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,<b>x</b>", "/etc/passwd"])
def test_the_pages_never_make_a_link_of_anything_but_http(url: str) -> None:
    link = _templates().env.from_string(
        '{% from "_macros.html" import link %}{{ link(url) }}')
    html = link.render(url=url)
    assert "<a " not in html and "not-a-link" in html
    assert "<a href=\"https://example.org/\"" in link.render(url="https://example.org/")
