"""The Source protocol: something that yields image bytes with their provenance."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from facetrail.records import ImageRecord, Provenance, SourceFailure

SeenCheck = Callable[[str, str], bool]
"""``seen(location, fingerprint)`` is True when that location, unchanged, is already ingested.

Sources call it before reading bytes they can skip cheaply."""

SourceItem = ImageRecord | SourceFailure

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff",
     ".heic", ".heif", ".avif"}
)


class Source(Protocol):
    """One kind of collection. ``items`` streams; it never holds the collection in memory."""

    kind: str

    def items(self, path: Path, seen: SeenCheck) -> Iterator[SourceItem]: ...

    def estimate(self, path: Path) -> int | None:
        """How many items ``items`` will yield, if that is cheap to know; else None."""
        ...


def file_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def never_seen(location: str, fingerprint: str) -> bool:
    return False


def read_local(
    file: Path, provenance: Provenance, seen: SeenCheck, context: str = ""
) -> Iterator[SourceItem]:
    """The bytes of a local file as one item, unless ``seen`` says it is unchanged."""
    try:
        fingerprint = file_fingerprint(file)
        if seen(provenance.location, fingerprint):
            return
        data = file.read_bytes()
    except OSError as exc:
        reason = f"{context}cannot read file: {exc.strerror or exc}"
        yield SourceFailure(provenance.location, "unreadable", reason)
        return
    yield ImageRecord(provenance, data, fingerprint)
