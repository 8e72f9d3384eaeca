"""The vector index protocol: nearest faces by face_id. Derived from the store, never the truth.

An index holds the embeddings of one face model, keyed by the store's ``face_id`` (never by
row position). ``open_index`` (``index/__init__.py``) returns one caught up with the store;
anything it holds can be thrown away and rebuilt from the store. Every back end passes the
contract suite ``tests/test_index_contract.py``.

Threads: every back end lets any number of threads call ``search``, ``size`` and ``info`` at
once, while other threads call ``add``, ``remove``, ``sync``, ``rebuild`` and ``optimize``
(which run one at a time). Nothing raises for it and no result is malformed: a search
returns only faces the index held at some moment during the call, with their exact
distances, never a face whose ``remove`` (or the ``sync`` that removed it) returned before
the search began, and it can find every face whose ``add`` or ``sync`` returned before it
began. A rebuild builds the new structure while searches go on with the one in use; searches
wait, if at all, only for the moment it is put in use and for a change to the structures
they read (a slice of an ``add``, a ``remove``). ``close`` is called once nothing else is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from facetrail.records import BuildReport, IndexInfo


class VectorIndex(Protocol):
    @property
    def size(self) -> int:
        """Faces the index holds (and a search can return)."""
        ...

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """For (n, dim) float32 queries: (distances, face_ids), each (n, k), nearest first.

        Distances are Euclidean (not squared) and exact for every face returned. Past the
        faces found, face_id is -1 and distance inf (k larger than the gallery, or an empty
        one).

        ``allowed``: a sorted int64 array of the face ids the search may return (None: every
        face). The filter is applied inside the search, so k allowed faces come back whenever
        the index holds at least k of them, nearest first among the allowed faces; an empty
        array finds nothing. Ids the index does not hold are ignored."""
        ...

    def add(self, face_ids: np.ndarray | Sequence[int], vectors: np.ndarray) -> int:
        """Index faces the store holds: int64 ids and their (len, dim) float32 vectors. Ids the
        index already holds are left as they are (a stored embedding never changes). Kept on
        return. Returns how many were added."""
        ...

    def remove(self, face_ids: np.ndarray | Sequence[int]) -> int:
        """Stop returning these faces (without a rebuild). Kept on return. Returns how many
        the index held."""
        ...

    def sync(self) -> int:
        """Catch up with the store, which is the truth: add the faces it holds that the index
        lacks and remove the ones gone from it. Returns the number of faces added."""
        ...

    def rebuild(self) -> BuildReport:
        """Build the index again from the store, as the settings ask."""
        ...

    def optimize(self) -> BuildReport:
        """Build the structure the settings choose for the gallery's size, and put it in use
        only if it searches well enough (``BuildReport.refused`` otherwise). Back ends with a
        single structure rebuild."""
        ...

    def info(self) -> IndexInfo: ...

    def close(self) -> None:
        """Persist what is not yet kept and release the index; it is not used afterwards."""
        ...
