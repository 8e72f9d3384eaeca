"""Manifest source: CSV, JSONL or Parquet rows naming local files and where they were found.

Columns: ``path`` (required; relative paths are taken from the manifest's folder), and the
optional ``source_url``, ``page_url`` (or a ``page_urls`` list, or ``|``-separated),
``captured_at`` and ``title``, checked as sources/fields.py says: a row with a bad field is
recorded as a ``bad_manifest_field`` error naming it, and is not ingested until the manifest is
fixed. A row with a URL but no local file is recorded as an error: facetrail never fetches
anything over the network. Each file is an ``ImageRef``: a worker reads it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Generator, Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

from facetrail.errors import ManifestError, MissingExtraError, PolicyError
from facetrail.records import Provenance, SourceFailure
from facetrail.sources import fields
from facetrail.sources.base import SeenCheck, SourceItem, kind_hint, local_item
from facetrail.sources.fields import FieldError

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")


class ManifestSource:
    kind = "manifest"

    def items(self, path: Path, seen: SeenCheck, root: Path | None = None
              ) -> Iterator[SourceItem]:
        manifest = path.resolve()
        base = manifest.parent
        root = (root or base).resolve()
        for number, row in enumerate(_rows(manifest), start=1):
            where = f"{manifest}:{number}"
            if isinstance(row, SourceFailure):
                yield row
                continue
            raw_path = _text(row.get("path"))
            if not raw_path:
                url = _text(row.get("source_url"))
                reason = (
                    f"row has no local path (only the URL {url}); facetrail never fetches URLs"
                    if url
                    else "row has no 'path'"
                )
                yield SourceFailure(where, "bad_manifest_row", reason)
                continue
            if "\x00" in raw_path:  # no file system takes it (fuzz/fuzz_manifest.py)
                yield SourceFailure(where, "bad_manifest_row", "the path holds a NUL character")
                continue
            file = Path(raw_path)
            file = (file if file.is_absolute() else base / file).resolve()
            try:
                provenance = _provenance(row, file, manifest)
            except FieldError as exc:
                yield SourceFailure(where, "bad_manifest_field", str(exc))
                continue
            yield from local_item(file, provenance, seen, root, context=f"{where}: ")


    def estimate(self, path: Path) -> int | None:
        return None

    def check(self, path: Path) -> None:
        """A manifest file of a known type whose header (and first row) can be used."""
        if not path.is_file() or path.suffix.lower() not in MANIFEST_SUFFIXES:
            raise PolicyError(f"{path} is not a manifest: a manifest source is a "
                              f"{', '.join(MANIFEST_SUFFIXES)} file{kind_hint(path)}")
        with closing(_rows(path.resolve())) as rows:
            first = next(rows, None)
        if isinstance(first, SourceFailure):
            raise ManifestError(f"{path}: its first row cannot be used: {first.reason}")


def _provenance(row: Mapping[str, Any], file: Path, manifest: Path) -> Provenance:
    """The row's fields, checked (sources/fields.py); FieldError names the first bad one."""
    source_url, captured_at, title = (
        _text(row.get(name)) for name in ("source_url", "captured_at", "title"))
    return Provenance(
        location=str(file),
        source_url=fields.url("source_url", source_url) if source_url else None,
        page_urls=tuple(fields.url("page_url", page) for page in _page_urls(row)),
        captured_at=fields.capture_time(captured_at) if captured_at else None,
        title=fields.title(title) if title else None,
        listing=str(manifest),
    )


def _rows(manifest: Path) -> Generator[Mapping[str, Any] | SourceFailure, None, None]:
    suffix = manifest.suffix.lower()
    try:
        if suffix == ".csv":
            with manifest.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames is None or "path" not in reader.fieldnames:
                    raise ManifestError(f"{manifest}: CSV manifest needs a 'path' column")
                yield from reader
        elif suffix in (".jsonl", ".ndjson"):
            with manifest.open(encoding="utf-8") as fh:
                for number, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield SourceFailure(f"{manifest}:{number}", "bad_manifest_row", str(exc))
                        continue
                    if not isinstance(row, dict):
                        yield SourceFailure(
                            f"{manifest}:{number}", "bad_manifest_row", "row is not an object"
                        )
                        continue
                    yield row
        elif suffix == ".parquet":
            yield from _parquet_rows(manifest)
        else:
            raise ManifestError(
                f"{manifest}: unknown manifest type; use one of {', '.join(MANIFEST_SUFFIXES)}"
            )
    except OSError as exc:
        raise ManifestError(f"{manifest}: cannot read manifest: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{manifest}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                            ) from exc
    except csv.Error as exc:
        raise ManifestError(f"{manifest}: not a readable CSV file: {exc}") from exc


def _parquet_rows(manifest: Path) -> Iterator[Mapping[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingExtraError("pyarrow", "parquet") from exc
    try:
        file = pq.ParquetFile(manifest)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid, not an OSError
        raise ManifestError(f"{manifest}: not a readable Parquet file: {exc}") from exc
    if "path" not in file.schema_arrow.names:
        raise ManifestError(f"{manifest}: Parquet manifest needs a 'path' column")
    for batch in file.iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _page_urls(row: Mapping[str, Any]) -> tuple[str, ...]:
    many = row.get("page_urls")
    if isinstance(many, list | tuple):
        urls = [str(u).strip() for u in many]
    else:
        one = _text(row.get("page_url")) or _text(many)
        urls = one.split("|") if one else []
    return tuple(dict.fromkeys(u.strip() for u in urls if u.strip()))
