"""Milvus index: one collection per face model on a Milvus server, keyed by face_id.

The collection ``<milvus_collection_prefix>_<model>_g<generation>`` holds each face's id (the
INT64 primary key) and its float32 vector, with an L2 index: ``FLAT`` (exact, kind ``flat``)
up to ``index_exact_max_faces`` faces, ``HNSW`` above (kind ``hnsw``). The store is the truth:
on open the index catches up with it (faces after the highest id held are inserted, and the
collection is matched to the store face by face when the counts differ), and ``rebuild``
fills a new generation from the store. The sidecar ``<home>/index/<model>.milvus.json``
records the generation in use, its build and its tuning; without it, or without its
collection, the index is rebuilt from the store.

The guarantees of ``VectorIndex`` hold on Milvus as they do on FAISS:

- **Recall measured at build, refused under the floor.** An HNSW generation is filled and
  indexed next to the one in use, then searched with recall queries (stored vectors plus
  noise, as ``ann.recall_queries``) against exact search over the store, for growing
  ``ef``; the smallest ``ef`` whose recall@10 lower bound reaches ``index_recall_floor`` is
  kept. If none does, the new collection is dropped and the previous one stays in use.
- **Exact distances.** Every search asks Milvus for the vectors of its hits and re-ranks them
  by exact Euclidean distance (float32 with ``faiss.knn``, as the FAISS flat tier); Milvus's
  own (squared) distances are not used.
- **Removed faces are never returned.** The index keeps the face ids the collection holds
  (8 bytes per face in the client). ``remove`` drops ids from that set before deleting them
  from Milvus, and every hit outside the set is discarded (a search whose hits were discarded
  asks for more). This does not wait on Milvus: a delete reaches its searches only once its
  time tick passes it (pymilvus's Session consistency tracks this client's inserts, not its
  deletes; Bounded waits up to ``gracefulTime``, 5 s; Strong costs ~200 ms a search here),
  so searches run at Session consistency, which finds every face this client inserted, and
  the id set answers for deletes.
- **Filtering keeps recall.** ``allowed`` becomes an ``id in [...]`` expression (of the
  allowed ids the index holds), which Milvus applies inside the search: HNSW skips the other
  faces while walking the graph (with ``ef`` broadened by 1 / the allowed share) and turns
  to brute force over the allowed ones when few are allowed. Unless few are allowed
  (``OVERFETCH_SHARE``), the search first runs unfiltered with a list long enough to hold the
  allowed neighbours wanted twice over, and keeps the allowed hits: the allowed faces among
  a query's nearest are its nearest allowed faces (as far as HNSW's recall, tuned at build,
  goes; the hits are re-ranked exactly). Only when too few
  were allowed even in longer lists is the expression sent: it costs ~75 ms a search with
  20,000 allowed ids (docs/milvus.md).

Searches share a readers-writer lock with changes, as in ``faiss_index.py``: adding, removing
and putting a rebuilt generation in use hold it alone only to change the id set or the
collection in use; the collection a rebuild replaces is dropped once no search reads it.

The ``milvus`` back end of ``VectorIndex`` (``index/base.py``); open it with
``facetrail.index.open_index`` (``index_backend = "milvus"``, ``milvus_uri``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from facetrail.errors import ConfigError, MissingExtraError
from facetrail.faces.base import ModelInfo
from facetrail.faces.cache import write_atomically
from facetrail.index import ann
from facetrail.index.ann import IndexPolicy
from facetrail.index.locking import ReadWriteLock
from facetrail.records import BuildReport, IndexInfo
from facetrail.store.base import Store

ID_FIELD = "face_id"
VECTOR_FIELD = "vector"
HNSW_M = 16
"""Links per node of Milvus's HNSW graph."""
HNSW_EF_CONSTRUCTION = 200
EF_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
"""HNSW search breadths tried at build time, smallest first."""
EF_MAX = 32_768
"""The broadest HNSW search Milvus 2.3 accepts."""
MAX_LIMIT = 16_384
"""Most hits one Milvus search may ask for (its ``topk`` limit)."""
INSERT_ROWS = 8192
"""Rows sent to Milvus in one insert."""
EXPR_CHUNK = 10_000
"""Ids in one ``id in [...]`` expression of a delete."""
OVERFETCH_SHARE = 0.05
"""A filtered search whose allowed faces are at least this share of the gallery runs
unfiltered with a list ``OVERFETCH`` / share times longer, and keeps the allowed hits (four
times longer again while too few were allowed); only then is the ``id in [...]`` expression
sent, whose cost grows with the allowed faces (~75 ms for 20,000)."""
OVERFETCH = 2
"""How many times the allowed neighbours wanted an over-fetched list expects to hold."""
OVERFETCH_EF = 4
"""The HNSW breadth of an over-fetched search, in lengths of its list."""
SEARCH_BATCH = 64
"""Queries sent in one Milvus search."""


def collection_base(prefix: str, model: ModelInfo) -> str:
    """The name every generation of ``model``'s collection starts with: letters, digits and
    underscores only (Milvus's rule), readable, and unique by a hash of the model key."""
    readable = re.sub(r"[^A-Za-z0-9]+", "_", f"{model.name}_{model.version}").strip("_")
    digest = hashlib.sha256(model.key.encode()).hexdigest()[:10]
    clean_prefix = re.sub(r"[^A-Za-z0-9_]+", "_", prefix) or "facetrail"
    if not clean_prefix[0].isalpha() and clean_prefix[0] != "_":
        clean_prefix = "f" + clean_prefix
    return f"{clean_prefix}_{readable[:80]}_{digest}"


class MilvusIndex:
    backend = "milvus"

    def __init__(
        self,
        directory: Path,
        store: Store,
        model: ModelInfo,
        model_id: int,
        uri: str,
        token: str | None = None,
        prefix: str = "facetrail",
        policy: IndexPolicy | None = None,
    ) -> None:
        try:
            import pymilvus
        except ImportError as exc:
            raise MissingExtraError("pymilvus", "milvus") from exc
        import faiss

        self._faiss = faiss
        self._pymilvus = pymilvus
        self.model = model
        self.policy = policy or IndexPolicy()
        self.uri = uri
        self.directory = directory
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.key)
        self.meta_path = directory / f"{slug}.milvus.json"
        self.base = collection_base(prefix, model)
        self._store = store
        self._model_id = model_id
        try:
            self._client = pymilvus.MilvusClient(uri=uri, token=token or "", timeout=30)
        except pymilvus.MilvusException as exc:
            raise ConfigError(f"cannot reach the Milvus server at {uri}: {exc}") from exc
        self._lock = ReadWriteLock()
        self._writing = threading.RLock()
        self._held = np.empty(0, np.int64)
        """Face ids the collection in use holds, sorted: what a search may return."""
        self._collection = ""
        self._generation = 0
        self._kind = "flat"
        self._ef = 0
        self._build: dict[str, Any] = {}
        self._last_refusal: dict[str, Any] | None = None
        if not self._load() and self._optimize().refused:
            self._optimize("flat")  # nothing in use yet: exact search, which is always right
        self.sync()

    # -- state --------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self._held)

    def _name(self, generation: int) -> str:
        return f"{self.base}_g{generation}"

    def _load(self) -> bool:
        """Take up the generation the sidecar names, if its collection exists; read the face
        ids it holds. False when there is nothing to take up."""
        try:
            meta = json.loads(self.meta_path.read_text())
            generation = int(meta["generation"])
            kind = str(meta["kind"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        name = self._name(generation)
        if meta.get("model") != self.model.key or not self._client.has_collection(name):
            return False
        self._client.load_collection(name)
        self._collection, self._generation, self._kind = name, generation, kind
        self._ef = int(meta.get("ef", 0))
        self._build = dict(meta.get("build", {}))
        self._last_refusal = meta.get("last_refusal")
        self._held = self._read_ids(name)
        return True

    def _read_ids(self, name: str) -> np.ndarray:
        """Every face id the collection holds, sorted (read at Strong consistency)."""
        chunks: list[np.ndarray] = []
        iterator = self._client.query_iterator(
            name, batch_size=MAX_LIMIT, filter=f"{ID_FIELD} >= 0", output_fields=[ID_FIELD],
            consistency_level="Strong",
        )
        try:
            while rows := iterator.next():
                chunks.append(np.fromiter((r[ID_FIELD] for r in rows), np.int64, len(rows)))
        finally:
            iterator.close()
        return np.unique(np.concatenate(chunks)) if chunks else np.empty(0, np.int64)

    def _write_meta(self) -> None:
        meta = {
            "model": self.model.key, "uri": self.uri, "collection": self._collection,
            "generation": self._generation, "kind": self._kind, "ef": self._ef,
            "build": self._build, "last_refusal": self._last_refusal,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomically(self.meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))

    def close(self) -> None:
        with self._writing:
            self._write_meta()
            self._client.close()

    # -- keeping up with the store ------------------------------------------------------------
    def sync(self) -> int:
        """Bring the collection up to the store: insert new faces, delete faces gone from it,
        and build the other kind when the gallery's size calls for it. Returns the number of
        faces added."""
        with self._writing:
            count, _ = self._store.face_count(self._model_id)
            after = int(self._held[-1]) if len(self._held) else 0
            added = 0
            for ids, vectors in self._store.iter_embeddings(self._model_id, after_id=after):
                added += self._add(ids, vectors)
            if self.size != count:
                added += self._reconcile()
            if self._wants_optimize():
                self._optimize()
            return added

    def _reconcile(self) -> int:
        """Match the collection to the store face by face (after removals, or faces added
        below the highest id held)."""
        added = 0
        seen: list[np.ndarray] = []
        for ids, vectors in self._store.iter_embeddings(self._model_id):
            seen.append(ids)
            missing = ~np.isin(ids, self._held)
            if missing.any():
                added += self._add(ids[missing], vectors[missing])
        stored = np.concatenate(seen) if seen else np.empty(0, np.int64)
        self.remove(np.setdiff1d(self._held, stored))
        return added

    def add(self, face_ids: np.ndarray | Sequence[int], vectors: np.ndarray) -> int:
        ids = np.asarray(face_ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.model.dim)
        with self._writing:
            return self._add(ids, vectors)

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Insert the faces the collection does not hold; they become searchable (the id set)
        once Milvus has them. Returns how many were inserted."""
        ids, first = np.unique(ids, return_index=True)
        vectors = vectors[first]
        new = ~np.isin(ids, self._held)
        if not new.any():
            return 0
        ids, vectors = ids[new], vectors[new]
        _insert(self._client, self._collection, ids, vectors)
        held = np.union1d(self._held, ids)
        with self._lock.exclusive():
            self._held = held
        return len(ids)

    def remove(self, face_ids: np.ndarray | Sequence[int]) -> int:
        """Stop returning these faces: they leave the id set (searches discard them from
        then on), then Milvus deletes them. Returns how many the collection held."""
        ids = np.unique(np.asarray(face_ids, dtype=np.int64))
        if not len(ids):
            return 0
        with self._writing:
            gone = ids[np.isin(ids, self._held)]
            if not len(gone):
                return 0
            held = np.setdiff1d(self._held, gone)
            with self._lock.exclusive():
                self._held = held
            for start in range(0, len(gone), EXPR_CHUNK):
                part = gone[start : start + EXPR_CHUNK]
                self._client.delete(self._collection, ids=part.tolist())
            return len(gone)

    # -- kinds and builds ---------------------------------------------------------------------
    def planned_kind(self, faces: int | None = None) -> str:
        faces = self.size if faces is None else faces
        return "flat" if faces <= self.policy.exact_max_faces else "hnsw"

    def _wants_optimize(self) -> bool:
        planned = self.planned_kind()
        refusal = self._last_refusal
        if (refusal is not None and planned == refusal["kind"]
                and self.size < self.policy.regrow_factor * refusal["faces"]):
            return False
        if planned != self._kind:
            return True
        built = int(self._build.get("faces", 0))
        return self._kind != "flat" and self.size >= self.policy.regrow_factor * max(built, 1)

    def rebuild(self) -> BuildReport:
        """Refill a new generation from the store (``optimize``)."""
        return self.optimize()

    def optimize(self) -> BuildReport:
        """Build a new generation from the store with the kind chosen for its size; an HNSW
        one is put in use only if its recall@10 reaches the floor (``BuildReport.refused``
        otherwise). Searches go on with the generation in use meanwhile."""
        with self._writing:
            return self._optimize()

    def _optimize(self, kind: str | None = None) -> BuildReport:
        """Build ``kind`` (the planned kind by default) from the store; see ``optimize``."""
        started = time.perf_counter()
        count, _ = self._store.face_count(self._model_id)
        planned = self.planned_kind(count)
        kind = kind or planned
        generation = self._next_generation()
        name = self._name(generation)
        self._create(name, kind)
        held: list[np.ndarray] = []
        for ids, vectors in self._store.iter_embeddings(self._model_id):
            _insert(self._client, name, ids, vectors)
            held.append(ids)
        ids = np.unique(np.concatenate(held)) if held else np.empty(0, np.int64)
        if kind == "hnsw":
            # Sealed segments get the HNSW index; growing ones are searched by brute force,
            # which would flatter the recall measured. FLAT is brute force either way.
            self._client.flush(name)
            self._wait_indexed(name, len(ids))
        self._client.load_collection(name)
        recall, lower, queries, ef = 1.0, 1.0, 0, 0
        if kind == "hnsw":
            measured, ef = self._tune(name, ids)
            recall, lower, queries = measured.recall, measured.lower, measured.queries
            floor = self.policy.recall_floor
            if lower < floor:
                self._client.drop_collection(name)
                self._last_refusal = {"faces": len(ids), "kind": kind, "recall_at_10": recall,
                                      "recall_at_10_lower": lower, "at": _now()}
                self._write_meta()
                return self._report(
                    False, kind, started, recall, queries,
                    f"the hnsw collection was NOT put in use: its recall@10 was {recall} on "
                    f"{queries} sampled queries, lower bound {lower} (best at ef {ef}), under "
                    f"the floor {floor}; the {self._kind} collection stays. Lower "
                    "index_recall_floor, or use the faiss back end.",
                    lower=lower, ef=ef,
                    why=f"recall@10 lower bound {lower} under the floor {floor}",
                )
        with self._lock.exclusive():
            self._collection, self._generation, self._kind, self._ef = name, generation, kind, ef
            self._held = ids
        self._build = {"faces": len(ids), "recall_at_10": recall, "recall_at_10_lower": lower,
                       "recall_queries": queries, "at": _now(),
                       "seconds": round(time.perf_counter() - started, 2)}
        if kind == planned:
            self._last_refusal = None
        self._write_meta()
        for other in self._client.list_collections():
            if other.startswith(f"{self.base}_g") and other != name:
                self._client.drop_collection(other)
        message = (f"exact collection rebuilt from the store: {len(ids):,} faces" if kind == "flat"
                   else f"hnsw collection put in use: {len(ids):,} faces, recall@10 {recall} on "
                   f"{queries} sampled queries (lower bound {lower}, floor "
                   f"{self.policy.recall_floor}, ef {ef})")
        return self._report(True, kind, started, recall, queries, message, lower=lower, ef=ef)

    def _next_generation(self) -> int:
        prefix = f"{self.base}_g"
        taken = [int(n[len(prefix):]) for n in self._client.list_collections()
                 if n.startswith(prefix) and n[len(prefix):].isdigit()]
        return max([self._generation, *taken]) + 1

    def _create(self, name: str, kind: str) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False,
            description=f"facetrail faces of {self.model.name} {self.model.version}",
        )
        schema.add_field(ID_FIELD, DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self.model.dim)
        params = self._client.prepare_index_params()
        if kind == "flat":
            params.add_index(field_name=VECTOR_FIELD, index_type="FLAT", metric_type="L2")
        else:
            params.add_index(field_name=VECTOR_FIELD, index_type="HNSW", metric_type="L2",
                             params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION})
        if self._client.has_collection(name):
            self._client.drop_collection(name)
        self._client.create_collection(name, schema=schema, index_params=params,
                                       consistency_level="Session")

    def _wait_indexed(self, name: str, rows: int, timeout: float = 3600.0) -> None:
        """Until the index is built over every sealed row."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            index = self._client.describe_index(name, VECTOR_FIELD)
            if int(index.get("pending_index_rows", 0)) == 0 and (
                    int(index.get("indexed_rows", 0)) >= rows or rows == 0
                    or str(index.get("state")) == "Finished"):
                return
            time.sleep(0.2)

    def _tune(self, name: str, ids: np.ndarray) -> tuple[ann.Measured, int]:
        """The smallest ef whose recall@10 (lower bound) reaches the floor, or the best one."""
        queries = self._recall_queries(ids)
        k = min(ann.RECALL_K, len(ids))
        truth = self._exact_ids(queries, k)
        best: tuple[ann.Measured, int] | None = None
        for ef in EF_STEPS:
            if ef < k:
                continue
            _, found = self._search_in(name, queries, k, None, ef, "Strong", ids)
            measured = ann.measure(ann.Tuning(0, ef, 1), found, truth)
            if best is None or measured.lower > best[0].lower:
                best = (measured, ef)
            if measured.lower >= self.policy.recall_floor:
                return measured, ef
        assert best is not None
        return best

    def _recall_queries(self, ids: np.ndarray) -> np.ndarray:
        """A seeded sample of stored vectors plus Gaussian noise (as ``ann.recall_queries``)."""
        rng = np.random.default_rng(ann.SEED + 1)
        m = min(self.policy.recall_queries, len(ids))
        chosen = np.sort(rng.choice(ids, m, replace=False))
        rows = []
        for batch_ids, vectors in self._store.iter_embeddings(self._model_id):
            keep = np.isin(batch_ids, chosen)
            if keep.any():
                rows.append(vectors[keep])
        sample = np.concatenate(rows).astype(np.float32)
        noise = rng.normal(0.0, ann.RECALL_NOISE, sample.shape).astype(np.float32)
        return np.ascontiguousarray(sample + noise)

    def _exact_ids(self, queries: np.ndarray, k: int) -> np.ndarray:
        """The true top-k face ids of each query, by brute force over the store."""
        best_d = np.full((len(queries), k), np.inf, np.float32)
        best_i = np.full((len(queries), k), -1, np.int64)
        for ids, vectors in self._store.iter_embeddings(self._model_id):
            d, i = self._faiss.knn(queries, np.ascontiguousarray(vectors, np.float32),
                                   min(k, len(ids)))
            merged_d = np.concatenate([best_d, d], axis=1)
            merged_i = np.concatenate([best_i, ids[i]], axis=1)
            order = np.argsort(merged_d, axis=1, kind="stable")[:, :k]
            best_d = np.take_along_axis(merged_d, order, axis=1)
            best_i = np.take_along_axis(merged_i, order, axis=1)
        return best_i

    def _report(self, swapped: bool, built: str, started: float, recall: float, queries: int,
                message: str, lower: float, ef: int, why: str | None = None) -> BuildReport:
        details: dict[str, Any] = {
            "collection": self._collection, "recall_queries": queries,
            "recall_at_10_lower": lower, "recall_floor": self.policy.recall_floor,
        }
        if built == "hnsw":
            details.update({"ef": ef, "M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION})
        return BuildReport(
            backend=self.backend, kind=self._kind, built_kind=built, faces=self.size,
            recall_at_10=recall, seconds=round(time.perf_counter() - started, 2),
            message=message, refused=not swapped, why=why, details=details,
        )

    def info(self) -> IndexInfo:
        """The kind in use (``flat`` or ``hnsw``); ``details``: the server, the collection,
        the index parameters, the recall measurement and the kind the settings now choose.
        ``memory_bytes`` is an estimate: vectors, ids and, for HNSW, its links (2 x M
        four-byte links per face on the bottom layer)."""
        with self._lock.shared():
            refusal = self._last_refusal
            recall = float(self._build.get("recall_at_10", 1.0))
            per_face = 4 * self.model.dim + 8 + (8 * HNSW_M if self._kind == "hnsw" else 0)
            details: dict[str, Any] = {
                "uri": self.uri, "collection": self._collection,
                "index_type": "HNSW" if self._kind == "hnsw" else "FLAT",
                "recall_queries": int(self._build.get("recall_queries", 0)),
                "recall_at_10_lower": float(self._build.get("recall_at_10_lower", recall)),
                "build_seconds": self._build.get("seconds"),
                "planned_kind": self.planned_kind(),
                "client_id_bytes": 8 * self.size,
            }
            if self._kind == "hnsw":
                details.update({"ef": self._ef, "M": HNSW_M,
                                "efConstruction": HNSW_EF_CONSTRUCTION})
            return IndexInfo(
                backend=self.backend, kind=self._kind, faces=self.size,
                memory_bytes=per_face * self.size, recall_at_10=recall,
                built_at=self._build.get("at"), refused=refusal is not None,
                why=(f"{refusal['kind']} collection refused at {refusal['at']}: recall@10 "
                     f"{refusal['recall_at_10']} (lower bound {refusal['recall_at_10_lower']})"
                     f" over {refusal['faces']:,} faces, under the floor"
                     if refusal else None),
                details=details,
            )

    # -- search -------------------------------------------------------------------------------
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.model.dim)
        allowed = ann.allowed_ids(allowed)
        # Held through the Milvus search: a rebuild drops the collection it replaces once
        # no search reads it.
        with self._lock.shared():
            held = self._held
            if allowed is not None:
                allowed = allowed[np.isin(allowed, held)]
            return self._search_in(self._collection, queries, k, allowed, self._ef, "Session",
                                   held)

    def _search_in(
        self, name: str, queries: np.ndarray, k: int, allowed: np.ndarray | None, ef: int,
        consistency: str, held: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(distances, face ids), each (n, k), exact, nearest first, among the faces of
        ``held`` (and of ``allowed``: held ids only, or None for every face)."""
        n = len(queries)
        distances = np.full((n, k), np.inf, np.float32)
        found_ids = np.full((n, k), -1, np.int64)
        eligible = len(held) if allowed is None else len(allowed)
        wanted = min(k, eligible)
        if wanted == 0 or n == 0:
            return distances, found_ids
        share = eligible / max(len(held), 1)
        overfetch = allowed is not None and share >= OVERFETCH_SHARE
        limit = min(MAX_LIMIT, max(wanted, math.ceil(OVERFETCH * wanted / share)
                                   if overfetch else wanted))
        # A filter skips the other faces while walking the graph, so the allowed neighbours
        # lie farther out: the search is broadened by 1 / share. Measured at 200k faces with
        # 10 % allowed (docs/milvus.md): recall@10 0.935 at the tuned ef 384, 0.995 at 4096.
        filtered_ef = min(EF_MAX, max(ef, math.ceil(ef / share))) if ef else ef
        pending = np.arange(n)
        while len(pending):
            expr = None if allowed is None or overfetch else _in_expr(allowed)
            # Filtered, the graph walk skips the other faces: broadened by 1 / share. An
            # over-fetched list is read to its end, where a walk as broad as the list is least
            # exact: OVERFETCH_EF times broader, and at least twice the tuned breadth.
            breadth = (filtered_ef if expr else
                       max(2 * ef, OVERFETCH_EF * limit) if overfetch else ef)
            hits = self._milvus_search(name, queries[pending], limit, expr,
                                       min(EF_MAX, max(breadth, limit)), consistency)
            short: list[int] = []
            for q, (hit_ids, hit_vectors) in zip(pending, hits, strict=True):
                keep = np.isin(hit_ids, held if allowed is None else allowed)
                # Hits discarded: ask again for more; an over-fetch that cannot grow any more
                # goes on to the filter inside Milvus.
                if keep.sum() < wanted and len(hit_ids) >= limit and (
                        overfetch or limit < MAX_LIMIT):
                    short.append(int(q))
                    continue
                d, i = self._rerank(queries[q], hit_ids[keep], hit_vectors[keep], k)
                distances[q], found_ids[q] = d, i
            pending = np.asarray(short, np.int64)
            if overfetch and len(pending) and 4 * limit > MAX_LIMIT:
                overfetch = False  # the allowed faces are farther: filter inside Milvus
                limit = wanted
            else:
                limit = min(MAX_LIMIT, 4 * limit)
        return distances, found_ids

    def _milvus_search(
        self, name: str, queries: np.ndarray, limit: int, expr: str | None, ef: int,
        consistency: str,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(face ids, vectors) of each query's hits, ``SEARCH_BATCH`` queries a request."""
        params = {"metric_type": "L2", "params": {"ef": ef}}
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for start in range(0, len(queries), SEARCH_BATCH):
            part = queries[start : start + SEARCH_BATCH]
            result = self._client.search(
                name, data=part.tolist(), limit=limit, filter=expr or "",
                output_fields=[VECTOR_FIELD], search_params=params,
                consistency_level=consistency, anns_field=VECTOR_FIELD,
            )
            for row in result:
                ids = np.fromiter((h["id"] for h in row), np.int64, len(row))
                vectors = (np.asarray([h["entity"][VECTOR_FIELD] for h in row], np.float32)
                           .reshape(len(row), self.model.dim))
                out.append((ids, vectors))
        return iter(out)

    def _rerank(
        self, query: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The exact top ``k`` of the hits, padded with (inf, -1)."""
        distances = np.full(k, np.inf, np.float32)
        out = np.full(k, -1, np.int64)
        ids, first = np.unique(ids, return_index=True)
        vectors = vectors[first]
        got = min(k, len(ids))
        if got:
            d, i = self._faiss.knn(query[None, :], np.ascontiguousarray(vectors), got)
            distances[:got] = np.sqrt(np.maximum(d[0], 0))
            out[:got] = ids[i[0]]
        return distances, out


def _in_expr(ids: np.ndarray) -> str:
    return f"{ID_FIELD} in [{','.join(map(str, ids.tolist()))}]"


def _insert(client: Any, name: str, ids: np.ndarray, vectors: np.ndarray) -> None:
    vectors = np.asarray(vectors, np.float32)
    for start in range(0, len(ids), INSERT_ROWS):
        rows = [{ID_FIELD: int(i), VECTOR_FIELD: v}
                for i, v in zip(ids[start : start + INSERT_ROWS].tolist(),
                                vectors[start : start + INSERT_ROWS].tolist(), strict=True)]
        client.insert(name, rows)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
