"""FAISS index, keyed by face_id, persisted next to the store, in one of three tiers.

Small galleries are searched exactly (``flat``: ``IndexFlatL2`` in ``index/<model>.faiss``).
Above ``index_exact_max_faces``, or when exact search does not fit ``index_memory_mb``, the
index is rebuilt as an approximate one (``sq8`` or ``pq``, see ``ann.py``) whose shortlists
are re-ranked exactly against float32 vectors memory-mapped from ``<model>.g<N>.f32``. An
approximate index is swapped in only if its recall@10, measured at build time, reaches the
floor with margin (its lower confidence bound does); otherwise the previous index stays.

The sidecar ``<model>.json`` records the tier, which faces the index holds (count and highest
face_id), its files and how it was tuned. On open, an index that is missing, unreadable, for
another model, or behind the store catches up: new faces are added, faces gone from the store
are removed, without a rebuild. Rebuilds are seeded, so the same store gives the same index.

Searches run in parallel with each other (FAISS releases the GIL) and with updates: they
share a readers-writer lock (``locking.py``), which adding or removing faces holds alone for
the change to the structures only, a slice of at most ``ADD_SLICE`` faces at a time. A rebuild
builds and measures the new index without it and holds it alone only to put the new index in
use. Changes run one at a time (``_writing``); saving the index to disk reads it alongside
searches. Measured in bench/index_concurrency.py (docs/index.md).

A search may be limited to allowed face ids: the flat tier scans every face with a bitmap of
the allowed ids; the approximate tiers search exactly among the allowed faces when there are
few of them (``EXACT_FILTER_SHARE``), else probe more lists with the bitmap, so that a filtered
search finds as many allowed neighbours as an unfiltered one finds neighbours.

The ``faiss`` back end of ``VectorIndex`` (``index/base.py``); open it with
``facetrail.index.open_index``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from facetrail.faces.base import ModelInfo
from facetrail.faces.cache import write_atomically
from facetrail.index import ann
from facetrail.index.ann import IndexPolicy, Tuning
from facetrail.index.locking import ReadWriteLock
from facetrail.index.vectorfile import VectorFile
from facetrail.records import BuildReport, IndexInfo
from facetrail.store.base import Store

PARALLEL_BATCH = 16
"""Query batches smaller than this are searched on one thread."""
ADD_SLICE = 4096
"""Faces added to the structures in one exclusive section: searches wait for one slice at
most, not for a whole batch of the store."""
EXACT_FILTER_SHARE = 0.02
"""An approximate tier searches exactly among the allowed faces when they are at most this
share of the gallery and ``EXACT_FILTER_MAX`` faces: there, reading their float32 vectors
costs about what probing the lists does, and is exact (docs/index.md)."""
EXACT_FILTER_MAX = 50_000
"""... at most this many faces (25 MB of 128-d float32 vectors, ~20 ms on one core)."""


class FaissIndex:
    backend = "faiss"

    def __init__(
        self,
        directory: Path,
        store: Store,
        model: ModelInfo,
        model_id: int,
        policy: IndexPolicy | None = None,
    ) -> None:
        import faiss

        self._faiss = faiss
        self.slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.key)
        self.directory = directory
        self.path = directory / f"{self.slug}.faiss"
        self.meta_path = directory / f"{self.slug}.json"
        self.model = model
        self.policy = policy or IndexPolicy()
        self._store = store
        self._model_id = model_id
        self._lock = ReadWriteLock()
        self._writing = threading.RLock()
        """Held by every change (add, remove, sync, rebuild, save): one at a time."""
        self._reset_flat()
        self._generation = 0
        self._build: dict[str, Any] = {}
        self._last_refusal: dict[str, Any] | None = None
        self._dirty = False
        self._load()
        self.sync()

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    def close(self) -> None:
        with self._writing:
            self.save()

    @property
    def tier(self) -> str:
        return self._tier

    # -- state and files ------------------------------------------------------------------------
    def _reset_flat(self) -> None:
        self._tier = "flat"
        self._index: Any = self._new_flat()
        self._vectors: VectorFile | None = None
        self._tuning: Tuning | None = None
        self._removed = np.empty(0, np.int64)
        """Approximate tiers: face ids with a row in the vector file that the index no longer
        holds (removed since the build), sorted."""
        self._max_id = 0

    def _new_flat(self) -> Any:
        return self._faiss.IndexIDMap2(self._faiss.IndexFlatL2(self.model.dim))

    def _ann_paths(self, generation: int) -> tuple[Path, Path]:
        """(index file, vector file stem) of an approximate index's generation."""
        stem = self.directory / f"{self.slug}.g{generation}"
        return stem.with_name(stem.name + ".ivf"), stem

    def _index_path(self) -> Path:
        return self.path if self._tier == "flat" else self._ann_paths(self._generation)[0]

    def _load(self) -> None:
        try:
            meta = json.loads(self.meta_path.read_text())
            tier = meta.get("tier", "flat")
            generation = int(meta.get("generation", 0))
            path = self.path if tier == "flat" else self._ann_paths(generation)[0]
            index = self._faiss.read_index(str(path))
        except (OSError, ValueError, RuntimeError, TypeError):
            return  # missing or unreadable: sync() rebuilds it from the store
        if (
            meta.get("model") != self.model.key
            or index.ntotal != meta.get("count")
            or index.d != self.model.dim
            or tier not in ann.TIERS
        ):
            return
        vectors = None
        if tier != "flat":
            vectors = VectorFile(self._ann_paths(generation)[1], self.model.dim)
            if not vectors.open(int(meta.get("rows", -1))):
                return
            self._tuning = Tuning(**meta["tuning"])
        self._tier, self._index, self._vectors = tier, index, vectors
        self._generation, self._max_id = generation, int(meta["max_face_id"])
        if vectors is not None:
            self._removed = np.setdiff1d(vectors.ids, self._held_ids())
        self._build = dict(meta.get("build", {}))
        self._last_refusal = meta.get("last_refusal")

    def save(self) -> None:
        """Write the index and its sidecar if they changed. Writing reads the index, so
        searches go on meanwhile; the caller holds ``_writing``."""
        if not self._dirty and self._index_path().exists() and self.meta_path.exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        # Several server processes may keep one data directory's index: each writes a file
        # of its own and renames it, so a reader never sees a torn one.
        write_atomically(self._index_path(),
                         lambda tmp: self._faiss.write_index(self._index, str(tmp)))
        self._write_meta()
        self._dirty = False

    def _write_meta(self) -> None:
        meta: dict[str, Any] = {
            "model": self.model.key, "count": self.size, "max_face_id": self._max_id,
            "tier": self._tier, "type": ann.describe(self._index, self._faiss),
            "generation": self._generation, "build": self._build,
            "last_refusal": self._last_refusal,
        }
        if self._vectors is not None and self._tuning is not None:
            meta["rows"] = self._vectors.rows
            meta["tuning"] = {"nprobe": self._tuning.nprobe,
                              "ef_search": self._tuning.ef_search,
                              "shortlist_factor": self._tuning.shortlist_factor}
        write_atomically(self.meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))

    # -- keeping up with the store ----------------------------------------------------------------
    def sync(self) -> int:
        """Bring the index up to the store: add new faces, remove faces gone from it, and
        change tier when the gallery size calls for another (``optimize``). Returns the
        number of faces added."""
        with self._writing:
            count, _ = self._store.face_count(self._model_id)
            added = 0
            for ids, vectors in self._store.iter_embeddings(self._model_id,
                                                            after_id=self._max_id):
                self._add(ids, vectors)
                added += len(ids)
            if self.size != count:
                added += self._reconcile()
            if added:
                self._dirty = True
                self.save()
            if self._wants_optimize():
                self.optimize()
            return added

    def _reconcile(self) -> int:
        """Match the index to the store face by face (after removals, or a face added below
        the highest id): add what is missing, remove what is gone. Returns faces added."""
        held = self._held_ids()
        seen = []
        added = 0
        for ids, vectors in self._store.iter_embeddings(self._model_id):
            seen.append(ids)
            missing = ~np.isin(ids, held)
            if missing.any():
                self._add(ids[missing], vectors[missing])
                added += int(missing.sum())
        stored = np.concatenate(seen) if seen else np.empty(0, np.int64)
        self.remove(np.setdiff1d(held, stored))
        return added

    def _held_ids(self) -> np.ndarray:
        """Every face id the index holds, sorted."""
        faiss = self._faiss
        if self._tier == "flat":
            return np.sort(faiss.vector_to_array(self._index.id_map))
        lists = self._index.invlists
        chunks = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(lists.nlist) if lists.list_size(i)
        ]
        return np.sort(np.concatenate(chunks)) if chunks else np.empty(0, np.int64)

    def add(self, face_ids: np.ndarray | Sequence[int], vectors: np.ndarray) -> int:
        """Add faces by face id (ids already held are skipped); the index is saved. Returns
        how many were added."""
        ids = np.asarray(face_ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.model.dim)
        with self._writing:
            new = ~self._holds(ids)
            if not new.any():
                return 0
            self._add(ids[new], vectors[new])
            self._dirty = True
            self.save()
            return int(new.sum())

    def _holds(self, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` the index holds (bool mask)."""
        if self._vectors is None:
            return np.isin(ids, self._held_ids())
        return self._vectors.contains(ids) & ~np.isin(ids, self._removed)

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add faces the index does not hold, ``ADD_SLICE`` at a time, each slice in an
        exclusive section; the re-rank file is written before, outside it."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        for start in range(0, len(ids), ADD_SLICE):
            part_ids = ids[start : start + ADD_SLICE]
            part = vectors[start : start + ADD_SLICE]
            written = self._vectors.write(part_ids, part) if self._vectors is not None else None
            removed = (np.setdiff1d(self._removed, part_ids)
                       if len(self._removed) else self._removed)
            with self._lock.exclusive():
                if self._vectors is not None and written is not None:
                    self._vectors.extend(written)
                self._index.add_with_ids(part, part_ids)
                self._removed = removed
        self._max_id = max(self._max_id, int(ids.max()))

    def remove(self, face_ids: np.ndarray | Sequence[int]) -> int:
        """Remove faces from the index by face id, without a rebuild; the index is saved.
        Returns how many it held. (Approximate tiers keep the float32 row on disk until the
        next rebuild, zeroed, and never return the id again.)"""
        ids = np.ascontiguousarray(np.asarray(face_ids, dtype=np.int64))
        if not len(ids):
            return 0
        with self._writing:
            gone = self._removed
            if self._vectors is not None:
                gone = np.union1d(gone, ids[self._vectors.contains(ids)])
            sizes = ann.list_sizes(self._index) if self._vectors is not None else None
            with self._lock.exclusive():
                removed = (int(self._index.remove_ids(self._faiss.IDSelectorBatch(ids)))
                           if sizes is None
                           else ann.remove_ids(self._index, ids, self._faiss, sizes))
                self._removed = gone
            if self._vectors is not None:
                # Only now that no search returns them: a search until then re-ranks them.
                self._vectors.scrub(ids)
            if removed:
                self._dirty = True
                self.save()
            return removed

    # -- tiers ------------------------------------------------------------------------------------
    def planned_tier(self) -> str:
        return ann.choose_tier(self.size, self.model.dim, self.policy)

    def _wants_optimize(self) -> bool:
        planned = self.planned_tier()
        refusal = self._last_refusal
        if (
            refusal is not None
            and planned == refusal["tier"]
            and self.size < self.policy.regrow_factor * refusal["faces"]
        ):
            return False  # refused for this tier: retried when asked, or after growth
        if planned != self._tier:
            return True
        built = int(self._build.get("faces", 0))
        return self._tier != "flat" and self.size >= self.policy.regrow_factor * built

    def rebuild(self) -> BuildReport:
        """Rebuild from the store in the tier the settings choose (``optimize``)."""
        return self.optimize()

    def _swap(self, tier: str, index: Any, vectors: VectorFile | None, tuning: Tuning | None,
              generation: int, max_id: int) -> None:
        """Put a built index in use: the only moment of a rebuild that searches wait for."""
        with self._lock.exclusive():
            self._tier, self._index, self._vectors = tier, index, vectors
            self._tuning, self._generation, self._max_id = tuning, generation, max_id
            self._removed = np.empty(0, np.int64)

    def optimize(self) -> BuildReport:
        """Rebuild the index from the store in the tier chosen for its size and the memory
        budget. An approximate index is measured first (recall@10 against exact search, on
        sampled queries) and swapped in only if it reaches the recall floor. Searches go on
        with the index in use while the new one is built and measured."""
        with self._writing:
            return self._optimize()

    def _optimize(self) -> BuildReport:
        started = time.perf_counter()
        planned = self.planned_tier()
        if planned == "flat":
            old = self._files()
            flat = self._new_flat()
            for ids, chunk in self._store.iter_embeddings(self._model_id):
                flat.add_with_ids(np.ascontiguousarray(chunk, dtype=np.float32),
                                  np.ascontiguousarray(ids, dtype=np.int64))
            max_id = int(self._faiss.vector_to_array(flat.id_map).max()) if flat.ntotal else 0
            self._swap("flat", flat, None, None, self._generation, max_id)
            self._finish_swap(old, started, faces=self.size, recall=1.0, queries=0)
            return self._report(True, "flat", started, 1.0, 0,
                                f"exact index rebuilt from the store: {self.size:,} faces")
        generation = self._generation + 1
        index_path, stem = self._ann_paths(generation)
        vectors = VectorFile(stem, self.model.dim)
        vectors.create()
        for ids, chunk in self._store.iter_embeddings(self._model_id):
            vectors.append(ids, chunk)
        index = ann.build(planned, vectors, self._faiss)
        measured = ann.tune(index, vectors, self.policy, self._faiss)
        floor = self.policy.recall_floor
        if measured.lower < floor:
            vectors.delete()
            self._last_refusal = {
                "faces": vectors.rows, "tier": planned, "recall_at_10": measured.recall,
                "recall_at_10_lower": measured.lower, "at": _now(),
            }
            self._write_meta()
            t = measured.tuning
            return self._report(
                False, planned, started, measured.recall, measured.queries,
                f"the {planned} index was NOT swapped in: its recall@10 was {measured.recall} "
                f"on {measured.queries} sampled queries, lower bound {measured.lower} (best at "
                f"nprobe {t.nprobe}, shortlist {t.shortlist_factor} x k), under the floor "
                f"{floor}; the {self._tier} index stays. Raise index_max_nprobe or "
                "index_memory_mb, or lower index_recall_floor.",
                tuning=t, lower=measured.lower,
                why=f"recall@10 lower bound {measured.lower} under the floor {floor}",
            )
        old = self._files()
        self._swap(planned, index, vectors, measured.tuning, generation,
                   int(vectors.ids.max()) if vectors.rows else 0)
        self._finish_swap(old, started, faces=vectors.rows, recall=measured.recall,
                          queries=measured.queries, lower=measured.lower)
        assert index_path.exists()
        return self._report(
            True, planned, started, measured.recall, measured.queries,
            f"{planned} index swapped in: {self.size:,} faces, recall@10 {measured.recall} "
            f"on {measured.queries} sampled queries (lower bound {measured.lower}, floor "
            f"{floor})",
            tuning=measured.tuning, lower=measured.lower,
        )

    def _files(self) -> list[Path]:
        """The files of the index in use, to delete once another one is swapped in."""
        if self._tier == "flat" or self._vectors is None:
            return [self.path]
        return [self._ann_paths(self._generation)[0], self._vectors.vectors_path,
                self._vectors.ids_path]

    def _finish_swap(
        self, old: list[Path], started: float, *, faces: int, recall: float, queries: int,
        lower: float | None = None,
    ) -> None:
        self._build = {"faces": faces, "recall_at_10": recall,
                       "recall_at_10_lower": recall if lower is None else lower,
                       "recall_queries": queries,
                       "at": _now(), "seconds": round(time.perf_counter() - started, 2)}
        self._last_refusal = None
        self._dirty = True
        self.save()
        for path in old:
            if path not in self._files():
                path.unlink(missing_ok=True)

    def _report(
        self, swapped: bool, built: str, started: float, recall: float, queries: int,
        message: str, tuning: Tuning | None = None, lower: float | None = None,
        why: str | None = None,
    ) -> BuildReport:
        details: dict[str, Any] = {
            "recall_queries": queries,
            "recall_at_10_lower": recall if lower is None else lower,
            "recall_floor": self.policy.recall_floor,
        }
        if tuning is not None:
            details.update(_tuning_details(tuning))
        return BuildReport(
            backend=self.backend, kind=self._tier, built_kind=built, faces=self.size,
            recall_at_10=recall, seconds=round(time.perf_counter() - started, 2),
            message=message, refused=not swapped, why=why, details=details,
        )

    def info(self) -> IndexInfo:
        """The tier in use; ``details``: its FAISS structure, the re-rank file's bytes on disk,
        the recall measurement (queries, lower bound), the search settings tuned at build
        time, the build's seconds and the tier the settings now choose."""
        with self._lock.shared():
            return self._info()

    def _info(self) -> IndexInfo:
        refusal = self._last_refusal
        recall = float(self._build.get("recall_at_10", 1.0))
        details: dict[str, Any] = {
            "structure": ann.describe(self._index, self._faiss),
            "rerank_bytes": self._vectors.nbytes if self._vectors is not None else 0,
            "recall_queries": int(self._build.get("recall_queries", 0)),
            "recall_at_10_lower": float(self._build.get("recall_at_10_lower", recall)),
        }
        if self._tuning is not None:
            details.update(_tuning_details(self._tuning))
        details["build_seconds"] = self._build.get("seconds")
        details["planned_tier"] = self.planned_tier()
        return IndexInfo(
            backend=self.backend, kind=self._tier, faces=self.size,
            memory_bytes=ann.memory_bytes(self._index, self._faiss),
            recall_at_10=recall, built_at=self._build.get("at"),
            refused=refusal is not None,
            why=(
                f"{refusal['tier']} index refused at {refusal['at']}: recall@10 "
                f"{refusal['recall_at_10']} (lower bound "
                f"{refusal.get('recall_at_10_lower', refusal['recall_at_10'])}) over "
                f"{refusal['faces']:,} faces, under the floor"
                if refusal else None
            ),
            details=details,
        )

    # -- search -----------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        allowed = ann.allowed_ids(allowed)
        n = len(queries)
        distances = np.full((n, k), np.inf, np.float32)
        ids = np.full((n, k), -1, np.int64)
        # One query on OpenMP threads is 2-5x slower than on one thread here, and far
        # slower while other processes (an ingest) hold the cores (bench/README.md).
        threads: AbstractContextManager[None] = (
            nullcontext() if len(queries) >= PARALLEL_BATCH else ann.one_thread(self._faiss)
        )
        with self._lock.shared(), threads:
            found = min(k, self.size, k if allowed is None else len(allowed))
            if found == 0:
                return distances, ids
            squared, got = self._search(queries, found, allowed)
        ids[:, :found] = got
        distances[:, :found] = np.where(got >= 0, np.sqrt(np.maximum(squared, 0)), np.inf)
        return distances, ids

    def _search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(squared distances, face ids) of the index in use; the caller holds the lock."""
        faiss = self._faiss
        if self._vectors is None or self._tuning is None:
            if allowed is None:
                return self._index.search(queries, k)
            params = faiss.SearchParameters(sel=ann.allowed_selector(allowed, faiss))
            return self._index.search(queries, k, params=params)
        if allowed is not None and len(allowed) <= min(
            EXACT_FILTER_MAX, EXACT_FILTER_SHARE * self.size
        ):
            held = allowed[self._vectors.contains(allowed)]
            held = held[~np.isin(held, self._removed)]
            return ann.exact_among(held, queries, self._vectors, k, faiss)
        return ann.search(self._index, self._vectors, queries, k, self._tuning, faiss,
                          allowed=allowed)


def _tuning_details(tuning: Tuning) -> dict[str, Any]:
    return {"nprobe": tuning.nprobe, "ef_search": tuning.ef_search,
            "shortlist_factor": tuning.shortlist_factor}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

