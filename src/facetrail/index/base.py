"""The vector index protocol: nearest faces by face_id. Derived from the store, never the truth."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class VectorIndex(Protocol):
    @property
    def size(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """For (n, dim) float32 queries: (distances, face_ids), each (n, k), nearest first.

        Distances are Euclidean (not squared). Missing neighbours have face_id -1."""
        ...
