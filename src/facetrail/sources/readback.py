"""Reading a stored image's bytes back from where the store says it was found.

Only inside the registered paths of the appearance's source (its uri and the paths it was
ingested from), and only if the bytes still hash to the image's sha256. Locations are a file
path, ``<warc>#<offset>`` or ``<wacz>!<member>#<offset>``. Used to serve images and crops,
and to re-analyse a gallery with another face model (``facetrail reembed``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from warcio.archiveiterator import ArchiveIterator

from facetrail import imaging
from facetrail.errors import NotFoundError
from facetrail.records import Appearance
from facetrail.store.base import Store


def image_bytes(store: Store, sha256: str) -> bytes:
    """The bytes of a stored image, read from one of its appearances and checked."""
    appearances = store.image_appearances(sha256)
    if not appearances:
        raise NotFoundError(f"no image with sha256 {sha256} in the store")
    data = first_readable(store, sha256, appearances)
    if data is None:
        raise NotFoundError(f"image {sha256} is no longer readable where it was found")
    return data


def first_readable(store: Store, sha256: str, appearances: Sequence[Appearance],
                   roots: dict[str, list[Path]] | None = None) -> bytes | None:
    """The bytes at the first of ``appearances`` that still holds the image, else None.
    ``roots`` (source name -> registered paths) is filled as sources are met, so that a
    caller reading many images looks each source's paths up once."""
    roots = {} if roots is None else roots
    for a in appearances:
        if a.source not in roots:
            roots[a.source] = [Path(r) for r in store.source_roots(a.source)]
        data = read_location(roots[a.source], a.location)
        if data is not None and imaging.sha256_hex(data) == sha256:
            return data
    return None


def read_location(roots: list[Path], location: str) -> bytes | None:
    """The bytes at an appearance's location if it lies inside one of ``roots`` (a source's
    registered paths); None if it does not or cannot be read."""
    file_part, offset = location, None
    if "#" in location:
        file_part, _, tail = location.rpartition("#")
        if not tail.isdigit():
            return None
        offset = int(tail)
    member = None
    if offset is not None and "!" in file_part:
        file_part, _, member = file_part.partition("!")
    try:
        path = Path(file_part).resolve(strict=True)
        if not any(path.is_relative_to(root.resolve()) for root in roots):
            return None
        if offset is None:
            return path.read_bytes() if path.is_file() else None
        if member is None:
            with path.open("rb") as stream:
                return _record_at(stream, offset)
        with zipfile.ZipFile(path) as zf, zf.open(member) as stream:
            return _record_at(stream, offset)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _record_at(stream: IO[bytes], offset: int) -> bytes | None:
    stream.seek(offset)
    for record in ArchiveIterator(stream):
        return bytes(record.content_stream().read())
    return None
