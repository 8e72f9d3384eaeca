"""Index stage: nearest-neighbour search over face embeddings, derived from the store.

Back ends, by the name ``index_backend`` (``FACETRAIL_INDEX_BACKEND``) gives:

- ``faiss`` (the default): FAISS in ``<home>/index/``, exact up to ``index_exact_max_faces``,
  then IVF + HNSW with SQ8 or PQ codes and an exact re-rank (``faiss_index.py``, ``ann.py``;
  docs/index.md).
- ``milvus``: one collection per face model on a Milvus server (``milvus_uri``), FLAT up to
  ``index_exact_max_faces``, then HNSW measured at build (``milvus_index.py``; docs/milvus.md).

A new back end is one module implementing ``VectorIndex``, one ``case`` in ``open_index`` and
its name in ``INDEX_BACKENDS``, which puts it under the contract suite
(tests/test_index_contract.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from facetrail.errors import ConfigError
from facetrail.index.base import VectorIndex
from facetrail.records import BuildReport, IndexInfo

if TYPE_CHECKING:
    from facetrail.faces.base import ModelInfo
    from facetrail.settings import Settings
    from facetrail.store.base import Store

INDEX_BACKENDS = ("faiss", "milvus")
"""The index back ends facetrail ships, by name."""

__all__ = ["INDEX_BACKENDS", "BuildReport", "IndexInfo", "VectorIndex", "open_index"]


def open_index(settings: Settings, store: Store, model: ModelInfo, model_id: int) -> VectorIndex:
    """The vector index of face model ``model`` (the store's ``model_id``) in the back end
    ``settings.index_backend``, caught up with ``store``. Files, if the back end keeps any,
    live under ``<settings.home>/index/``. Close it with ``close()``."""
    match settings.index_backend:
        case "faiss":
            from facetrail.index.ann import IndexPolicy
            from facetrail.index.faiss_index import FaissIndex

            return FaissIndex(settings.home / "index", store, model, model_id,
                              IndexPolicy.from_settings(settings))
        case "milvus":
            from facetrail.index.ann import IndexPolicy
            from facetrail.index.milvus_index import MilvusIndex

            return MilvusIndex(settings.home / "index", store, model, model_id,
                               settings.milvus_uri, settings.milvus_token,
                               settings.milvus_collection_prefix,
                               IndexPolicy.from_settings(settings))
        case other:
            raise ConfigError(
                f"unknown index back end {other!r}; use one of {', '.join(INDEX_BACKENDS)}"
            )
