"""The Source protocol: something that yields image bytes with their provenance."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from facetrail.records import ImageRecord, SourceFailure

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
