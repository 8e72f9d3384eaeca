"""Folder source: every image file under a directory, recursively, in sorted order, as an
``ImageRef`` (a worker reads it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from facetrail.records import Provenance
from facetrail.sources.base import IMAGE_SUFFIXES, SeenCheck, SourceItem, local_item


class FolderSource:
    kind = "folder"

    def items(self, path: Path, seen: SeenCheck) -> Iterator[SourceItem]:
        for file in _image_files(path.resolve()):
            yield from local_item(file, Provenance(location=str(file)), seen)

    def estimate(self, path: Path) -> int | None:
        return sum(1 for _ in _image_files(path.resolve()))



def _image_files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    # Sorted walk keeps runs reproducible; symlinked directories are not followed (loops).
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(dirpath) / name
