"""FAISS index, keyed by face_id, persisted next to the store.

The file ``index/<model>.faiss`` has a sidecar ``.json`` that records which faces it holds
(count and highest face_id). On open, an index that is missing, unreadable, for another
model, or behind the store catches up: new faces (face_id above the recorded highest) are
added; if faces were removed from the store, the index is rebuilt from it. Exact search
(``IndexFlatL2``) is used, so a rebuild gives identical results.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from facetrail.faces.base import ModelInfo
from facetrail.store.base import Store

PARALLEL_BATCH = 16
"""Query batches smaller than this are searched on one thread."""


class FaissIndex:
    def __init__(self, directory: Path, store: Store, model: ModelInfo, model_id: int) -> None:
        import faiss

        self._faiss = faiss
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.key)
        self.path = directory / f"{slug}.faiss"
        self.meta_path = directory / f"{slug}.json"
        self.model = model
        self._store = store
        self._model_id = model_id
        self._index = self._empty()
        self._max_id = 0
        self._dirty = False
        self._load()
        self.sync()

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    def _empty(self) -> Any:
        return self._faiss.IndexIDMap2(self._faiss.IndexFlatL2(self.model.dim))

    def _load(self) -> None:
        try:
            meta = json.loads(self.meta_path.read_text())
            index = self._faiss.read_index(str(self.path))
        except (OSError, ValueError, RuntimeError):
            return  # missing or unreadable: sync() rebuilds it from the store
        if (
            meta.get("model") != self.model.key
            or index.ntotal != meta.get("count")
            or index.d != self.model.dim
        ):
            return
        self._index, self._max_id = index, int(meta["max_face_id"])

    def sync(self) -> int:
        """Bring the index up to the store. Returns the number of faces added."""
        count, max_id = self._store.face_count(self._model_id)
        if max_id < self._max_id or (self.size > count):
            self._index, self._max_id = self._empty(), 0  # faces were removed: rebuild
        added = 0
        for ids, vectors in self._store.iter_embeddings(self._model_id, after_id=self._max_id):
            self._index.add_with_ids(vectors, ids)
            self._max_id = int(ids[-1])
            added += len(ids)
        if self.size != count:
            # Holes below the recorded maximum (a deletion and an insertion): rebuild fully.
            self._index, self._max_id, added = self._empty(), 0, 0
            for ids, vectors in self._store.iter_embeddings(self._model_id):
                self._index.add_with_ids(vectors, ids)
                self._max_id = int(ids[-1])
                added += len(ids)
        if added:
            self._dirty = True
            self.save()
        return added

    def rebuild(self) -> None:
        """Drop everything and rebuild from the store (exact, so results are identical)."""
        self._index, self._max_id = self._empty(), 0
        self.sync()
        self._dirty = True
        self.save()

    def save(self) -> None:
        if not self._dirty and self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".faiss.tmp")
        self._faiss.write_index(self._index, str(tmp))
        os.replace(tmp, self.path)
        meta = {"model": self.model.key, "count": self.size, "max_face_id": self._max_id,
                "type": "IndexIDMap2(IndexFlatL2)"}
        tmp_meta = self.meta_path.with_suffix(".json.tmp")
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, self.meta_path)
        self._dirty = False

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.size == 0:
            n = len(queries)
            return np.full((n, k), np.inf, np.float32), np.full((n, k), -1, np.int64)
        k = min(k, self.size)
        if len(queries) >= PARALLEL_BATCH:
            squared, ids = self._index.search(queries, k)
        else:
            # One query on OpenMP threads is 2-5x slower than on one thread here, and far
            # slower while other processes (an ingest) hold the cores (bench/README.md).
            threads = self._faiss.omp_get_max_threads()
            self._faiss.omp_set_num_threads(1)
            try:
                squared, ids = self._index.search(queries, k)
            finally:
                self._faiss.omp_set_num_threads(threads)
        return np.sqrt(np.maximum(squared, 0)), ids
