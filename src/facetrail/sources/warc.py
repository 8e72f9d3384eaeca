"""Web archive source: images inside ``.warc``, ``.warc.gz`` and ``.wacz`` files.

Every ``response`` (HTTP 2xx) or ``resource`` record with an ``image/*`` content type becomes an
image with ``source_url`` = WARC-Target-URI and ``captured_at`` = WARC-Date (checked as
sources/fields.py says; a record with a bad one is a ``bad_archive_field`` error and is not
ingested; a Target-URI is kept as the archive names it, and shown as a link only if it is an
http(s) URL). A first pass reads
the archive's HTML pages and records, for every image URL they embed (``img`` src/srcset,
``source`` srcset, resolved against the page URL and any ``<base href>``), the pages that embed
it. The archive itself is never left: nothing is fetched.

A broken or truncated record is reported as a failure located after the last good record
(``<archive>#after-<offset>``); reading stops for that archive file, since nothing after a
broken member can be located. A file that does not start as a WARC (``WARC/``, gzipped or
not), and an archive with no image record at all (only a header, only pages), are failures
too, located at ``<archive>#after-0`` or after its last record: never an archive read as
nothing.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urldefrag, urljoin

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from facetrail.errors import ArchiveError, OutsideSourceError, PolicyError
from facetrail.records import ImageRecord, Provenance, SourceFailure
from facetrail.sources import fields
from facetrail.sources.base import SeenCheck, SourceItem, file_fingerprint, kind_hint
from facetrail.sources.confine import confine

WARC_SUFFIXES = (".warc", ".warc.gz", ".wacz")
HTML_TYPES = ("text/html", "application/xhtml+xml")
MAX_HTML_BYTES = 16 * 1024 * 1024


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(WARC_SUFFIXES)


class WarcSource:
    kind = "warc"

    def items(self, path: Path, seen: SeenCheck, root: Path | None = None
              ) -> Iterator[SourceItem]:
        target = path.resolve()
        root = (root or target).resolve()
        archives = (
            sorted(p for p in target.rglob("*") if p.is_file() and is_archive(p))
            if target.is_dir()
            else [target]
        )
        for archive in archives:
            try:
                confine(archive, root)
            except OutsideSourceError as exc:
                yield SourceFailure(str(archive), exc.code, str(exc))
                continue
            yield from self._archive(archive, seen)

    def estimate(self, path: Path) -> int | None:
        return None

    def check(self, path: Path) -> None:
        """A WARC or WACZ file that starts as one, or a folder with one under it."""
        if path.is_dir():
            if not any(p.is_file() and is_archive(p) for p in path.rglob("*")):
                raise PolicyError(f"{path} holds no {', '.join(WARC_SUFFIXES)} file: a warc "
                                  "source is a web archive, or a folder of them (for a "
                                  "folder of photos, use --kind folder)")
            return
        if not is_archive(path):
            raise PolicyError(f"{path} is not a web archive: a warc source is a "
                              f"{', '.join(WARC_SUFFIXES)} file, or a folder of them"
                              f"{kind_hint(path)}")
        if path.name.lower().endswith(".wacz"):
            try:  # is_zipfile itself raises on some end records (fuzz/fuzz_warc.py)
                zipped = zipfile.is_zipfile(path)
            except (OSError, zipfile.BadZipFile, ValueError, EOFError) as exc:
                raise ArchiveError(f"{path} is not a readable WACZ file: {exc}") from exc
            if not zipped:
                raise ArchiveError(f"{path} is not a WACZ file: it is not a zip archive")
            return
        with path.open("rb") as stream:
            problem = _not_warc(stream)
        if problem is not None:
            raise ArchiveError(f"{path}: {problem}")

    def _archive(self, archive: Path, seen: SeenCheck) -> Iterator[SourceItem]:
        try:
            fingerprint = file_fingerprint(archive)
        except OSError as exc:
            yield SourceFailure(str(archive), "unreadable", f"cannot read archive: {exc}")
            return
        if archive.name.lower().endswith(".wacz"):
            yield from self._wacz(archive, fingerprint, seen)
            return
        pages = _embedding_pages(lambda: archive.open("rb"))
        yield from _images(lambda: archive.open("rb"), str(archive), str(archive), pages,
                           fingerprint, seen)

    def _wacz(self, archive: Path, fingerprint: str, seen: SeenCheck) -> Iterator[SourceItem]:
        try:
            zf = zipfile.ZipFile(archive)
        # zipfile refuses what it cannot read with NotImplementedError (a newer zip version,
        # a compression it lacks) or ValueError, besides BadZipFile (fuzz/fuzz_warc.py).
        except (OSError, zipfile.BadZipFile, NotImplementedError, ValueError, EOFError) as exc:
            yield SourceFailure(str(archive), "bad_archive", f"not a readable WACZ (zip): {exc}")
            return
        with zf:
            members = sorted(
                n for n in zf.namelist() if n.startswith("archive/") and is_archive(Path(n))
            )
            if not members:
                yield SourceFailure(str(archive), "bad_archive", "WACZ holds no archive/*.warc*")

            def opener(name: str) -> Any:
                return lambda: zf.open(name)

            pages: dict[str, list[str]] = {}
            for name in members:
                for url, urls in _embedding_pages(opener(name)).items():
                    pages.setdefault(url, []).extend(u for u in urls if u not in pages.get(url, []))
            for name in members:
                yield from _images(opener(name), f"{archive}!{name}", str(archive), pages,
                                   fingerprint, seen)


def _images(
    open_stream: Any, label: str, archive: str, pages: dict[str, list[str]], fingerprint: str,
    seen: SeenCheck,
) -> Iterator[SourceItem]:
    offset = 0  # of the last record read whole; failures are located "after" it
    try:
        with open_stream() as stream:
            head = _not_warc(stream)
        if head is not None:
            yield SourceFailure(f"{label}#after-0", "bad_archive", head)
            return
        read = images = 0
        with open_stream() as stream:
            records = ArchiveIterator(stream)
            for record in records:
                image = _is_image(record)
                # warcio locates a record only after its body is read, so read first.
                data = record.content_stream().read() if image else b""
                missing = _drain(record)
                if missing:  # warcio returns a short body silently when an archive is cut
                    yield SourceFailure(
                        f"{label}#after-{offset}", "bad_archive",
                        f"the next record ({_what(record)}) is truncated: {missing} bytes "
                        "missing",
                    )
                    return
                offset = records.get_record_offset()
                read += 1
                if not image:
                    continue
                images += 1
                url = record.rec_headers.get_header("WARC-Target-URI")
                date = record.rec_headers.get_header("WARC-Date")
                try:
                    captured_at = fields.capture_time(date, field="WARC-Date") if date else None
                except fields.FieldError as exc:
                    yield SourceFailure(f"{label}#{offset}", "bad_archive_field", str(exc))
                    continue
                provenance = Provenance(
                    location=f"{label}#{offset}",
                    source_url=url,
                    page_urls=tuple(pages.get(_norm(url), ())) if url else (),
                    captured_at=captured_at,
                    record_id=record.rec_headers.get_header("WARC-Record-ID"),
                    listing=archive,
                )
                if not seen(provenance, fingerprint):
                    yield ImageRecord(provenance, data, fingerprint)
        if not images:
            yield SourceFailure(
                f"{label}#after-{offset}", "empty_source",
                f"no image in this archive: {read} record(s), none a response or resource "
                "with an image/* type and a 2xx status" if read else
                "no WARC record in this archive",
            )
    except OSError as exc:
        yield SourceFailure(f"{label}#after-{offset}", "unreadable",
                            f"cannot read archive: {exc.strerror or exc}")
    except ArchiveLoadFailed as exc:
        yield SourceFailure(
            f"{label}#after-{offset}", "bad_archive", f"archive broken after this offset: {exc}"
        )
    except zlib.error as exc:
        yield SourceFailure(f"{label}#after-{offset}", "bad_archive",
                            f"archive broken after this offset: its gzip data is broken ({exc})")
    except Exception as exc:  # chunking and header errors surface from deep in warcio
        # Its own message would be about warcio's code ("'NoneType' object has no
        # attribute..."), not about the archive.
        yield SourceFailure(
            f"{label}#after-{offset}", "bad_archive",
            "archive broken after this offset: the next record cannot be parsed (a WARC or "
            f"HTTP header is missing or malformed; {type(exc).__name__} in warcio)",
        )


def _not_warc(stream: IO[bytes]) -> str | None:
    """Why ``stream`` is not a WARC file (gzipped or not), from its first bytes; None if it
    starts as one. (warcio reads arbitrary text as an old ARC file, records and all.)"""
    start = stream.read(4096)
    if not start:
        return "empty file (0 bytes): not a WARC"
    if start[:2] == b"\x1f\x8b":
        try:
            start = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(start, 64)
        except zlib.error as exc:
            return f"not a WARC file: its gzip data is broken ({exc})"
    if start.startswith(b"WARC/"):
        return None
    return f"not a WARC file: it starts with {start[:24]!r}, not 'WARC/'"


def _what(record: Any) -> str:
    """A record, in words: its URL, else its type."""
    headers = record.rec_headers
    url = headers.get_header("WARC-Target-URI") if headers is not None else None
    return url or f"a {record.rec_type or 'typeless'} record"


def _drain(record: Any) -> int:
    """Read what is left of a record's raw body; return how many declared bytes are missing."""
    while record.raw_stream.read(1 << 16):
        pass
    return int(getattr(record.raw_stream, "limit", 0))


def _embedding_pages(open_stream: Any) -> dict[str, list[str]]:
    """Map each image URL (normalised) to the archived pages that embed it, in archive order.

    A broken archive ends this pass quietly; the image pass reports where it broke."""
    pages: dict[str, list[str]] = {}
    try:
        with open_stream() as stream:
            for record in ArchiveIterator(stream):
                if record.rec_type not in ("response", "resource"):
                    continue
                if not _content_type(record).startswith(HTML_TYPES) or not _ok(record):
                    continue
                page_url = record.rec_headers.get_header("WARC-Target-URI")
                if not page_url:
                    continue
                html = _read_text(record.content_stream())
                for image_url in embedded_images(html, page_url):
                    known = pages.setdefault(_norm(image_url), [])
                    if page_url not in known:
                        known.append(page_url)
    except Exception:  # reported by _images, which reads the same bytes
        pass
    return pages


def embedded_images(html: str, page_url: str) -> list[str]:
    """Absolute URLs of the images an HTML page embeds (img src/srcset, source srcset)."""
    parser = _ImageRefs()
    parser.feed(html)
    parser.close()
    base = urljoin(page_url, parser.base) if parser.base else page_url
    return list(dict.fromkeys(urljoin(base, ref) for ref in parser.refs))


class _ImageRefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[str] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v for k, v in attrs if v}
        if tag == "base" and "href" in values and self.base is None:
            self.base = values["href"].strip()
        if tag == "img" and "src" in values:
            self.refs.append(values["src"].strip())
        if tag in ("img", "source") and "srcset" in values:
            for candidate in values["srcset"].split(","):
                parts = candidate.split()
                if parts:
                    self.refs.append(parts[0])


def _is_image(record: Any) -> bool:
    return (
        record.rec_type in ("response", "resource")
        and _content_type(record).startswith("image/")
        and _ok(record)
    )


def _ok(record: Any) -> bool:
    if record.rec_type != "response" or record.http_headers is None:
        return True
    status = record.http_headers.get_statuscode() or ""
    return status.startswith("2") and status != "206"


def _content_type(record: Any) -> str:
    headers = record.http_headers if record.rec_type == "response" else record.rec_headers
    value = headers.get_header("Content-Type") if headers is not None else None
    return (value or "").split(";")[0].strip().lower()


def _read_text(stream: IO[bytes]) -> str:
    """Up to MAX_HTML_BYTES of a page; warcio's streams return short reads, so loop."""
    chunks, size = [], 0
    while size < MAX_HTML_BYTES:
        chunk = stream.read(min(65536, MAX_HTML_BYTES - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _norm(url: str) -> str:
    """Matching key for URLs: no fragment, percent-escapes decoded (pages write ``%2C`` for
    the ``,`` that the archive's WARC-Target-URI has)."""
    return unquote(urldefrag(url.strip())[0])
