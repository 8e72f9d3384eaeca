"""Index stage: nearest-neighbour search over face embeddings, derived from the store."""

from __future__ import annotations

from facetrail.index.base import VectorIndex

__all__ = ["VectorIndex"]
