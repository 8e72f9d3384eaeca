"""Reading an image's bytes back from where it was found.

Locations are a file path, ``<warc>#<offset>`` or ``<wacz>!<member>#<offset>`` (``locate``
turns one into a ``Located``). The store's images are read back only inside the root of the
appearance's source (``facetrail.sources.confine``: its folder, a manifest's folder), and only if
the bytes still hash to the image's sha256. Used to serve images and crops, by ingest workers
reading what a source listed, and to re-analyse a gallery with another face model
(``facetrail reembed``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from warcio.archiveiterator import ArchiveIterator

from facetrail import imaging
from facetrail.errors import NotFoundError, OutsideSourceError, UnreadableError
from facetrail.records import Appearance, Located
from facetrail.sources.confine import source_root
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
            roots[a.source] = [Path(r) for r in source_roots(store, a.source)]
        data = read_location(roots[a.source], a.location)
        if data is not None and imaging.sha256_hex(data) == sha256:
            return data
    return None


def source_roots(store: Store, name: str) -> list[str]:
    """Where the images of the source ``name`` may be read back from: its root
    (``facetrail.sources.confine``), whatever paths its ingests were once given."""
    source = store.get_source(name)
    return [str(source_root(source.kind, source.uri))]


def read_location(roots: list[Path], location: str) -> bytes | None:
    """The bytes at an appearance's location if it lies inside one of ``roots`` (a source's
    registered paths); None if it does not or cannot be read."""
    place = locate(location, tuple(str(r) for r in roots))
    if place is None:
        return None
    try:
        return read_at(place)
    except UnreadableError:
        return None


def locate(location: str, roots: tuple[str, ...] | None = None) -> Located | None:
    """Where an appearance's location says its bytes lie; None if it names no place (an
    offset that is not a number)."""
    path, offset, member = location, None, None
    if "#" in location:
        path, _, tail = location.rpartition("#")
        if not tail.isdigit():
            return None
        offset = int(tail)
        if "!" in path:
            path, _, member = path.partition("!")
    return Located(path, offset, member, roots)


def read_image(places: Sequence[Located], sha256: str | None = None) -> bytes:
    """The bytes at the first of ``places`` that can be read (and that hash to ``sha256``,
    when given); raises ``UnreadableError`` with the last place's reason if none can."""
    reason = "no place to read it from"
    for place in places:
        try:
            data = read_at(place)
        except UnreadableError as exc:
            reason = str(exc)
            continue
        if sha256 is None or imaging.sha256_hex(data) == sha256:
            return data
        reason = f"{place.path}: the bytes changed since they were found"
    raise UnreadableError(reason)


def read_at(place: Located) -> bytes:
    """The bytes at ``place``; raises ``UnreadableError`` if they cannot be read, or if
    ``place`` lies outside its roots."""
    try:
        path = Path(place.path).resolve(strict=True)
        if place.roots is not None and not any(
            path.is_relative_to(Path(root).resolve()) for root in place.roots
        ):
            raise OutsideSourceError(f"{place.path} lies outside its source's folder")
        if place.offset is None:
            return path.read_bytes()
        if place.member is None:
            with path.open("rb") as stream:
                return _record_at(stream, place.offset)
        with zipfile.ZipFile(path) as zf, zf.open(place.member) as stream:
            return _record_at(stream, place.offset)
    except OSError as exc:
        what = "file" if place.offset is None else "archive"
        raise UnreadableError(f"cannot read {what}: {exc.strerror or exc}") from exc
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise UnreadableError(f"cannot read the record at {place.offset}: {exc}") from exc


def _record_at(stream: IO[bytes], offset: int) -> bytes:
    stream.seek(offset)
    for record in ArchiveIterator(stream):
        return bytes(record.content_stream().read())
    raise UnreadableError(f"no record at offset {offset}")
