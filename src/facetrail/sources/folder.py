"""Folder source: every image file under a directory, recursively, in sorted order."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from facetrail.records import ImageRecord, Provenance, SourceFailure
from facetrail.sources.base import IMAGE_SUFFIXES, SeenCheck, SourceItem, file_fingerprint


class FolderSource:
    kind = "folder"

    def items(self, path: Path, seen: SeenCheck) -> Iterator[SourceItem]:
        for file in _image_files(path.resolve()):
            yield from self._file(file, seen)

    def estimate(self, path: Path) -> int | None:
        return sum(1 for _ in _image_files(path.resolve()))

    def _file(self, file: Path, seen: SeenCheck) -> Iterator[SourceItem]:
        location = str(file)
        try:
            fingerprint = file_fingerprint(file)
            if seen(location, fingerprint):
                return
            data = file.read_bytes()
        except OSError as exc:
            yield SourceFailure(location, "unreadable", f"cannot read file: {exc.strerror or exc}")
            return
        yield ImageRecord(Provenance(location=location), data, fingerprint)


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
