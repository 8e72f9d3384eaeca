"""The Source protocol: something that yields images, with their provenance.

An image comes as its bytes (``ImageRecord``) when the source had to read them to find it (a
web archive's records), else as where it lies (``ImageRef``, a file), for a worker to read:
what the source does itself stays cheap (listing, and the ``seen`` check before any byte is
read), so that on a cluster the driver does not ship every byte to the workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from facetrail.errors import OutsideSourceError
from facetrail.records import ImageRecord, ImageRef, Located, Provenance, SourceFailure
from facetrail.sources.confine import confine

SeenCheck = Callable[[Provenance, str], bool]
"""``seen(provenance, fingerprint)`` is True when the item's location, unchanged, is already
ingested.

Sources call it before reading bytes they can skip cheaply."""

SourceItem = ImageRecord | ImageRef | SourceFailure

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
     ".heic", ".heif", ".avif"}
)


class Source(Protocol):
    """One kind of collection. ``items`` streams; it never holds the collection in memory."""

    kind: str

    def items(self, path: Path, seen: SeenCheck, root: Path | None = None
              ) -> Iterator[SourceItem]:
        """The items at ``path``. Files that lie outside ``root`` (the source's folder,
        ``facetrail.sources.confine``; None: ``path`` itself, or a manifest's folder) once
        their links are resolved are ``outside_source`` failures, never opened."""
        ...

    def estimate(self, path: Path) -> int | None:
        """How many items ``items`` will yield, if that is cheap to know; else None."""
        ...

    def check(self, path: Path) -> None:
        """Raise ``PolicyError`` unless ``path`` is of this kind (a folder, a manifest, an
        archive or a folder of them), and ``InputError`` if it cannot be read as one, from at
        most its header: a source is checked when it is added, not first at its ingest."""
        ...


def file_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def never_seen(provenance: Provenance, fingerprint: str) -> bool:
    return False


def local_item(
    file: Path, provenance: Provenance, seen: SeenCheck, root: Path, context: str = ""
) -> Iterator[SourceItem]:
    """A local file as one item, left unread, unless ``seen`` says it is unchanged; a
    failure if it lies outside ``root`` once its links are resolved (never opened, and the
    worker that reads it checks again)."""
    try:
        confine(file, root)
    except OutsideSourceError as exc:
        yield SourceFailure(provenance.location, exc.code, f"{context}{exc}")
        return
    try:
        fingerprint = file_fingerprint(file)
    except OSError as exc:
        reason = f"{context}cannot read file: {exc.strerror or exc}"
        yield SourceFailure(provenance.location, "unreadable", reason)
        return
    if not seen(provenance, fingerprint):
        yield ImageRef(provenance, Located(str(file), roots=(str(root),)), fingerprint, context)


def kind_hint(path: Path) -> str:
    """How to register ``path`` instead, when its name says it is another kind of source."""
    name = path.name.lower()
    if name.endswith((".warc", ".warc.gz", ".wacz")):
        return "; it is a web archive: add it with --kind warc"
    if name.endswith((".csv", ".jsonl", ".ndjson", ".parquet")):
        return "; it is a manifest: add it with --kind manifest"
    if path.is_dir():
        return ("; it is a folder: add it with --kind folder (or --kind warc, for a folder of "
                "web archives)")
    return ""
