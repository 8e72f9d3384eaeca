"""Folder source: every image file under a directory, recursively, in sorted order, as an
``ImageRef`` (a worker reads it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from facetrail.errors import PolicyError
from facetrail.records import Provenance, SourceFailure
from facetrail.sources.base import (
    IMAGE_SUFFIXES,
    SeenCheck,
    SourceItem,
    kind_hint,
    local_item,
)


class FolderSource:
    kind = "folder"

    def items(self, path: Path, seen: SeenCheck, root: Path | None = None
              ) -> Iterator[SourceItem]:
        root = (root or path).resolve()
        for file in _image_files(path.resolve()):
            if isinstance(file, SourceFailure):
                yield file
            else:
                yield from local_item(file, Provenance(location=str(file)), seen, root)

    def estimate(self, path: Path) -> int | None:
        return sum(1 for f in _image_files(path.resolve()) if isinstance(f, Path))

    def check(self, path: Path) -> None:
        if not path.is_dir():
            raise PolicyError(f"{path} is not a folder: a folder source is a folder of photos"
                              f"{kind_hint(path)}")


def _image_files(root: Path) -> Iterator[Path | SourceFailure]:
    """Image files under ``root``, and a failure for each folder that cannot be listed (its
    files are not gone: a re-ingest must not take them for deleted)."""
    if root.is_file():
        yield root
        return
    unlisted: list[OSError] = []
    # Sorted walk keeps runs reproducible; symlinked directories are not followed (loops).
    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted.append):
        yield from _unlisted(unlisted)
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(dirpath) / name
    yield from _unlisted(unlisted)


def _unlisted(errors: list[OSError]) -> Iterator[SourceFailure]:
    while errors:
        exc = errors.pop(0)
        yield SourceFailure(str(exc.filename), "unreadable",
                            f"cannot list folder: {exc.strerror or exc}")
