"""Float32 vectors and their face ids in two raw files, memory-mapped for the exact re-rank.

``<stem>.f32`` holds ``rows x dim`` little-endian float32 values, ``<stem>.ids`` ``rows``
little-endian int64 face ids, row by row in the order they were appended. Only rows named by
a shortlist are read, so the operating system keeps in memory just the pages searches touch:
the file costs disk (4 x dim + 8 bytes per face), not RAM.

A face removed from the index keeps its row here until the next rebuild, but its vector is
overwritten with zeros in place (``scrub``): an erased face leaves no copy in the file. The
approximate index no longer returns its id, so the row is never read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facetrail.errors import StoreError

Mapping = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]
"""A mapping of the files: (vectors, ids, the row order sorting the ids or None when they
are ascending, the sorted ids)."""


class VectorFile:
    def __init__(self, stem: Path, dim: int) -> None:
        self.vectors_path = stem.with_name(stem.name + ".f32")
        self.ids_path = stem.with_name(stem.name + ".ids")
        self.dim = dim
        self._vectors = np.empty((0, dim), np.float32)
        self._ids = np.empty(0, np.int64)
        self._order: np.ndarray | None = None
        """Row order that sorts the ids, when they were not appended in ascending order."""
        self._sorted = self._ids
        """The ids in ascending order (``_ids`` itself when appended in that order)."""

    @property
    def rows(self) -> int:
        return len(self._ids)

    @property
    def nbytes(self) -> int:
        return self.rows * (4 * self.dim + 8)

    @property
    def ids(self) -> np.ndarray:
        return self._ids

    def create(self) -> None:
        """Start empty files (replacing any)."""
        self.vectors_path.parent.mkdir(parents=True, exist_ok=True)
        for path in (self.vectors_path, self.ids_path):
            path.write_bytes(b"")
        self._map(0)

    def open(self, rows: int) -> bool:
        """Map the first ``rows`` rows. Rows past them (an append whose index was never saved)
        are cut off. False when the files are missing or shorter than ``rows``."""
        try:
            have_vectors = self.vectors_path.stat().st_size // (4 * self.dim)
            have_ids = self.ids_path.stat().st_size // 8
        except OSError:
            return False
        if min(have_vectors, have_ids) < rows:
            return False
        os.truncate(self.vectors_path, rows * 4 * self.dim)
        os.truncate(self.ids_path, rows * 8)
        self._map(rows)
        return True

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.extend(self.write(ids, vectors))

    def write(self, ids: np.ndarray, vectors: np.ndarray) -> Mapping:
        """Append rows to the files and map them, without using the new mapping yet: searches
        reading the rows mapped before are not disturbed. ``extend`` puts it in use."""
        ids = np.ascontiguousarray(ids, dtype="<i8")
        vectors = np.ascontiguousarray(vectors, dtype="<f4").reshape(len(ids), self.dim)
        with self.vectors_path.open("ab") as fh:
            fh.write(vectors.tobytes())
        with self.ids_path.open("ab") as fh:
            fh.write(ids.tobytes())
        ascending = self._order is None and (
            self.rows == 0 or bool(ids[0] > self._ids[-1])
        ) and bool(np.all(ids[1:] > ids[:-1]))
        return self._mapping(self.rows + len(ids), ascending)

    def extend(self, mapping: Mapping) -> None:
        """Use the mapping ``write`` made: the rows it appended can be looked up."""
        self._vectors, self._ids, self._order, self._sorted = mapping

    def delete(self) -> None:
        self._map_empty()
        for path in (self.vectors_path, self.ids_path):
            path.unlink(missing_ok=True)

    def scrub(self, face_ids: np.ndarray) -> int:
        """Overwrite the vectors of ``face_ids`` with zeros in the file, and sync it to disk.
        Returns how many rows were overwritten."""
        face_ids = np.asarray(face_ids, dtype=np.int64)
        held = face_ids[self.contains(face_ids)]
        if not len(held):
            return 0
        rows = self._rows(held)
        zeros = bytes(4 * self.dim)
        with self.vectors_path.open("r+b") as fh:
            for row in np.sort(rows):
                fh.seek(int(row) * 4 * self.dim)
                fh.write(zeros)
            fh.flush()
            os.fsync(fh.fileno())
        return len(held)

    def at(self, rows: np.ndarray | slice) -> np.ndarray:
        """The vectors of the given rows (row numbers, not face ids)."""
        return np.asarray(self._vectors[rows])

    def contains(self, face_ids: np.ndarray) -> np.ndarray:
        """Which of ``face_ids`` have a row (bool mask), removed from the index or not."""
        face_ids = np.asarray(face_ids, dtype=np.int64)
        if self.rows == 0:
            return np.zeros(len(face_ids), bool)
        ids = self._sorted
        at = np.minimum(np.searchsorted(ids, face_ids), self.rows - 1)
        return np.asarray(ids[at] == face_ids)

    def lookup(self, face_ids: np.ndarray) -> np.ndarray:
        """The vectors of ``face_ids``, shape (len, dim), in that order."""
        face_ids = np.asarray(face_ids, dtype=np.int64)
        if self.rows == 0 or not self.contains(face_ids).all():
            raise StoreError(
                f"the vector file {self.vectors_path} is out of step with the index; "
                "run: facetrail index rebuild"
            )
        return np.asarray(self._vectors[self._rows(face_ids)])

    def _rows(self, face_ids: np.ndarray) -> np.ndarray:
        """The rows of ``face_ids``, which the file holds. A face removed and added again has
        two rows: the last one, appended when it came back (the first one was zeroed)."""
        at = np.searchsorted(self._sorted, face_ids, side="right") - 1
        return at if self._order is None else self._order[at]

    def _map(self, rows: int, ascending: bool | None = None) -> None:
        """Map ``rows`` rows; ``ascending`` says whether the ids are known to be ascending
        (None: check them)."""
        if rows == 0:
            self._map_empty()
            return
        self.extend(self._mapping(rows, ascending))

    def _mapping(self, rows: int, ascending: bool | None) -> Mapping:
        vectors = np.memmap(self.vectors_path, "<f4", "r", shape=(rows, self.dim))
        ids = np.memmap(self.ids_path, "<i8", "r", shape=(rows,))
        if ascending is None:
            ascending = rows < 2 or bool(np.all(ids[1:] > ids[:-1]))
        order = None if ascending else np.argsort(ids, kind="stable")
        return vectors, ids, order, ids if order is None else ids[order]

    def _map_empty(self) -> None:
        self._vectors = np.empty((0, self.dim), np.float32)
        self._ids = np.empty(0, np.int64)
        self._order = None
        self._sorted = self._ids
