"""The contract every vector index back end keeps (``facetrail.index.base.VectorIndex``).

Run over every name in ``facetrail.index.INDEX_BACKENDS``, each on a real SQLite store filled
through the store's public methods with a synthetic gallery of unit vectors, so that the
nearest faces and their distances are known exactly (by brute force here). Searches while
the index changes, filtered searches and some other tests run again under settings that ask
for a back end's approximate structure (``STRUCTURES``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import erase_faces
from facetrail.audit import utc_now
from facetrail.errors import ConfigError
from facetrail.faces.base import ModelInfo
from facetrail.index import INDEX_BACKENDS, VectorIndex, open_index
from facetrail.records import DetectedFace, ImageAnalysis, Provenance
from facetrail.settings import Settings
from facetrail.store import RunCounts, SourceSpec, Store, default_store_url, open_store
from milvus_server import milvus_settings, milvus_uri  # noqa: F401 - fixtures

DIM = 64
PER_IMAGE = 3
MODEL = ModelInfo(name="synthetic", version="0", dim=DIM, alignment="none",
                  normalisation="l2", metric="cosine", detector="synthetic@0")
STRUCTURES: dict[str, dict[str, Any]] = {
    "exact": {},
    "approximate": {"index_exact_max_faces": 100, "index_recall_queries": 100},
}
"""Settings asking for a back end's exact structure, and for its approximate one where it has
one (FAISS leaves exact search above ``index_exact_max_faces`` faces; fewer recall queries
keep its builds quick)."""
BACKEND_SETTINGS: dict[str, str] = {"milvus": "milvus_settings"}
"""Back ends that need something to run against (a server): the name of the fixture giving
their settings overrides, e.g. a server's URL (tests/milvus.py), failing when there is none."""


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class Gallery:
    """A store of synthetic faces and the settings that open an index over it."""

    settings: Settings
    store: Store
    model_id: int
    source_id: int
    images: int = 0
    structure: str = "exact"

    def open(self) -> VectorIndex:
        return open_index(self.settings, self.store, MODEL, self.model_id)

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Store ``vectors`` as faces of new images, ``PER_IMAGE`` a photo; their face ids."""
        _, highest = self.store.face_count(self.model_id)
        run = self.store.start_run(self.source_id, ["synthetic"], "test", "test", utc_now())
        landmarks = tuple((float(x), float(x)) for x in range(5))
        for start in range(0, len(vectors), PER_IMAGE):
            faces = tuple(
                DetectedFace(box=(10 * i, 0, 80, 80), landmarks=landmarks, det_score=1.0,
                             quality=1.0, sharpness=100.0, embedding=v, runtime="onnx")
                for i, v in enumerate(vectors[start : start + PER_IMAGE])
            )
            sha = hashlib.sha256(f"synthetic-{self.images}".encode()).hexdigest()
            self.store.add_image(
                ImageAnalysis(sha, 400, 100, "JPEG", faces), 0, self.model_id, "synthetic@0",
                self.source_id, run, [(Provenance(f"synthetic-{self.images}.jpg"), None)],
            )
            self.images += 1
        self.store.finish_run(run, "completed", RunCounts(faces=len(vectors)))
        added = [ids for ids, _ in self.store.iter_embeddings(self.model_id, after_id=highest)]
        return np.concatenate(added)

    def stored(self) -> tuple[np.ndarray, np.ndarray]:
        """Every face id and vector the store holds, by face id."""
        chunks = list(self.store.iter_embeddings(self.model_id))
        if not chunks:
            return np.empty(0, np.int64), np.empty((0, DIM), np.float32)
        return np.concatenate([i for i, _ in chunks]), np.concatenate([v for _, v in chunks])


@pytest.fixture(params=INDEX_BACKENDS)
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides of one index back end."""
    name = request.param
    overrides: dict[str, Any] = {"index_backend": name}
    if name in BACKEND_SETTINGS:
        overrides.update(request.getfixturevalue(BACKEND_SETTINGS[name]))
    return overrides


def new_gallery(home: Path, settings: dict[str, Any], structure: str = "exact") -> Gallery:
    """A store with the synthetic model and a source, but no faces, in ``home``."""
    store = open_store(default_store_url(home))
    source = store.add_source(SourceSpec("synthetic", "folder", str(home), "test",
                                         "contract tests", None), "test")
    return Gallery(Settings(home=home, **settings), store, store.model_id(MODEL), source.id,
                   structure=structure)


@pytest.fixture
def empty(backend: dict[str, Any], tmp_path: Path) -> Iterator[Gallery]:
    """A store with the synthetic model and a source, but no faces."""
    gallery = new_gallery(tmp_path, backend)
    yield gallery
    gallery.store.close()


@pytest.fixture
def gallery(empty: Gallery) -> Gallery:
    """60 faces: 20 people, 3 photos each (each photo near its person's vector)."""
    rng = np.random.default_rng(1)
    people = unit(rng.normal(size=(20, DIM)))
    empty.add(unit(np.repeat(people, 3, axis=0) + rng.normal(0, 0.08, (60, DIM))))
    return empty


@pytest.fixture(params=list(STRUCTURES))
def crowd(
    request: pytest.FixtureRequest, backend: dict[str, Any], tmp_path: Path
) -> Iterator[Gallery]:
    """600 faces (200 people, 3 photos each), under each of ``STRUCTURES``."""
    gallery = new_gallery(tmp_path, {**backend, **STRUCTURES[request.param]}, request.param)
    rng = np.random.default_rng(5)
    people = unit(rng.normal(size=(200, DIM)))
    gallery.add(unit(np.repeat(people, 3, axis=0) + rng.normal(0, 0.08, (600, DIM))))
    yield gallery
    gallery.store.close()


def truth(
    gallery: Gallery, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``k`` (distances, face ids) by brute force over the store (over the
    ``allowed`` faces only, if given), padded with (inf, -1)."""
    ids, vectors = gallery.stored()
    if allowed is not None:
        keep = np.isin(ids, allowed)
        ids, vectors = ids[keep], vectors[keep]
    if len(ids) < k:
        d, i = truth_of(ids, vectors, queries, len(ids))
        pad = ((0, 0), (0, k - len(ids)))
        return np.pad(d, pad, constant_values=np.inf), np.pad(i, pad, constant_values=-1)
    return truth_of(ids, vectors, queries, k)


def truth_of(
    ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    d = np.linalg.norm(queries[:, None, :].astype(np.float64) - vectors[None, :, :], axis=2)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), ids[order]


def probes(gallery: Gallery, count: int = 12, seed: int = 2) -> np.ndarray:
    """Unit queries near stored faces (as another photo of the same person would be)."""
    _, vectors = gallery.stored()
    rng = np.random.default_rng(seed)
    rows = vectors[rng.choice(len(vectors), count, replace=False)]
    return unit(rows + rng.normal(0, 0.1, rows.shape))


def one_by_one(index: VectorIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query searched alone, as a search request does."""
    found = [index.search(queries[q : q + 1], k) for q in range(len(queries))]
    return np.concatenate([d for d, _ in found]), np.concatenate([i for _, i in found])


def assert_exact(gallery: Gallery, index: VectorIndex, queries: np.ndarray, k: int) -> None:
    distances, ids = index.search(queries, k)
    want_d, want_i = truth(gallery, queries, k)
    assert distances.shape == ids.shape == (len(queries), k)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, want_i)
    np.testing.assert_allclose(distances, want_d, rtol=0, atol=1e-4)


def test_search_returns_the_nearest_faces_first_with_exact_distances(gallery: Gallery) -> None:
    index = gallery.open()
    assert index.size == 60
    assert_exact(gallery, index, probes(gallery), 5)
    # One query at a time gives the same answer as a batch.
    queries = probes(gallery)
    batch = index.search(queries, 5)
    alone = one_by_one(index, queries, 5)
    np.testing.assert_array_equal(alone[1], batch[1])
    np.testing.assert_allclose(alone[0], batch[0], rtol=0, atol=1e-5)
    # A stored vector finds its own face first.
    ids, vectors = gallery.stored()
    distances, found = one_by_one(index, vectors[::7], 1)
    np.testing.assert_array_equal(found[:, 0], ids[::7])
    assert np.all(distances[:, 0] < 1e-3)
    index.close()


def test_k_beyond_the_gallery_pads_with_minus_one(gallery: Gallery) -> None:
    index = gallery.open()
    queries = probes(gallery, 3)
    distances, ids = index.search(queries, 65)
    assert ids.shape == distances.shape == (3, 65)
    want_d, want_i = truth(gallery, queries, 60)
    np.testing.assert_array_equal(ids[:, :60], want_i)
    np.testing.assert_allclose(distances[:, :60], want_d, rtol=0, atol=1e-4)
    assert np.all(ids[:, 60:] == -1) and np.all(np.isinf(distances[:, 60:]))
    index.close()


def test_an_empty_gallery_finds_nothing(empty: Gallery) -> None:
    index = empty.open()
    assert index.size == 0 and index.sync() == 0
    distances, ids = index.search(unit(np.ones((2, DIM))), 4)
    assert ids.shape == distances.shape == (2, 4)
    assert np.all(ids == -1) and np.all(np.isinf(distances))
    info = index.info()
    assert info.faces == 0 and info.backend == empty.settings.index_backend
    index.close()
    # Faces stored while it was closed are there when it is opened again.
    added = empty.add(unit(np.random.default_rng(3).normal(size=(4, DIM))))
    index = empty.open()
    assert index.size == 4
    _, ids = index.search(empty.stored()[1], 1)
    np.testing.assert_array_equal(ids[:, 0], added)
    index.close()


def test_removed_faces_are_never_returned(gallery: Gallery) -> None:
    index = gallery.open()
    ids, vectors = gallery.stored()
    gone = ids[[0, 1, 30]]
    assert index.remove(gone) == 3
    assert index.remove(gone) == 0 and index.remove([]) == 0
    assert index.size == 57 and index.info().faces == 57
    _, found = index.search(vectors, 60)
    assert not set(gone.tolist()) & set(found.ravel().tolist())
    assert np.all(found[:, 57:] == -1)
    # The store still holds them: add() puts them back (and skips faces already held).
    keep = np.isin(ids, gone)
    assert index.add(ids[keep], vectors[keep]) == 3
    assert index.add(ids[:5], vectors[:5]) == 0
    assert index.size == 60
    assert_exact(gallery, index, vectors[keep], 3)
    index.close()


def test_sync_follows_the_store(gallery: Gallery) -> None:
    index = gallery.open()
    assert index.sync() == 0 and index.size == 60
    new = gallery.add(unit(np.random.default_rng(4).normal(size=(7, DIM))))
    assert index.size == 60  # not yet
    assert index.sync() == 7 and index.size == 67
    _, ids = index.search(gallery.stored()[1][-7:], 1)
    np.testing.assert_array_equal(ids[:, 0], new)
    gone = [int(new[0]), 2, 40]
    erase_faces(gallery.store, gone)
    assert index.sync() == 0 and index.size == 64 and index.info().faces == 64
    _, ids = index.search(probes(gallery, 20), 64)
    assert not set(gone) & set(ids.ravel().tolist())
    assert_exact(gallery, index, probes(gallery), 10)
    index.close()


def test_an_index_opened_again_answers_the_same(gallery: Gallery) -> None:
    queries = probes(gallery)
    index = gallery.open()
    before = one_by_one(index, queries, 10)
    index.close()
    index = gallery.open()
    assert index.size == 60
    after = one_by_one(index, queries, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], rtol=0, atol=1e-6)
    # Removed from the index only, a face the store holds is back once it is opened again:
    # the store is the truth.
    index.remove(before[1][0, :1])
    index.close()
    index = gallery.open()
    assert index.size == 60
    np.testing.assert_array_equal(one_by_one(index, queries, 10)[1], before[1])
    index.close()


def test_rebuild_and_optimize_give_the_same_answers(gallery: Gallery) -> None:
    queries = probes(gallery)
    index = gallery.open()
    before = one_by_one(index, queries, 10)
    for report in (index.rebuild(), index.optimize()):
        assert report.backend == gallery.settings.index_backend
        assert not report.refused and report.faces == 60 and report.kind == report.built_kind
        assert report.message and report.seconds >= 0
        after = one_by_one(index, queries, 10)
        np.testing.assert_array_equal(after[1], before[1])
        np.testing.assert_allclose(after[0], before[0], rtol=0, atol=1e-6)
    index.close()


def test_info_is_back_end_neutral(gallery: Gallery) -> None:
    index = gallery.open()
    info = index.info()
    assert info.backend == gallery.settings.index_backend and info.faces == 60
    assert isinstance(info.kind, str) and info.kind
    assert info.memory_bytes >= 0 and info.memory_per_face == info.memory_bytes / 60
    assert info.recall_at_10 is None or 0.0 <= info.recall_at_10 <= 1.0
    assert not info.refused and info.why is None
    assert all(isinstance(key, str) for key in info.details)
    built = index.rebuild()
    info = index.info()
    assert info.built_at is not None and info.kind == built.kind and info.faces == 60
    index.close()


def test_faces_added_after_removals_are_found(crowd: Gallery) -> None:
    index = crowd.open()
    ids, _ = crowd.stored()
    erase_faces(crowd.store, ids[:10].tolist())
    assert index.remove(ids[:10]) == 10
    added = crowd.add(unit(np.random.default_rng(11).normal(size=(100, DIM))))
    assert index.sync() == 100
    every, vectors = crowd.stored()
    _, found = one_by_one(index, vectors, 1)
    np.testing.assert_array_equal(found[:, 0], every)
    assert set(added.tolist()) <= set(every.tolist())
    index.close()


def test_faces_removed_and_added_back_are_found_with_their_vectors(crowd: Gallery) -> None:
    index = crowd.open()
    ids, vectors = crowd.stored()
    assert index.remove(ids[:5]) == 5
    assert index.add(ids[:5], vectors[:5]) == 5
    distances, found = one_by_one(index, vectors[:5], 1)
    np.testing.assert_array_equal(found[:, 0], ids[:5])
    np.testing.assert_allclose(distances[:, 0], 0, atol=1e-3)
    index.close()


def test_an_unknown_back_end_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    store = open_store(default_store_url(tmp_path))
    try:
        with pytest.raises(ConfigError, match="unknown index back end 'nope'; use one of "
                           + ", ".join(INDEX_BACKENDS)):
            open_index(Settings(home=tmp_path, index_backend="nope"), store, MODEL,
                       store.model_id(MODEL))
    finally:
        store.close()


# -- filtered search -----------------------------------------------------------------------------
def test_a_filtered_search_finds_the_nearest_allowed_faces(gallery: Gallery) -> None:
    index = gallery.open()
    ids, vectors = gallery.stored()
    queries = probes(gallery)
    rng = np.random.default_rng(7)
    for count in (30, 6, 1):
        allowed = np.sort(rng.choice(ids, count, replace=False))
        distances, found = index.search(queries, 5, allowed)
        want_d, want_i = truth(gallery, queries, 5, allowed)
        np.testing.assert_array_equal(found, want_i)
        np.testing.assert_allclose(distances, want_d, rtol=0, atol=1e-4)
        # One query at a time gives the same answer as a batch.
        alone = [index.search(queries[q : q + 1], 5, allowed)[1] for q in range(len(queries))]
        np.testing.assert_array_equal(np.concatenate(alone), found)
    # k allowed faces come back even when they are the farthest from the query.
    for q in queries[:4]:
        far = ids[np.argsort(np.linalg.norm(vectors - q, axis=1))[-8:]]
        distances, found = index.search(q[None, :], 5, np.sort(far))
        assert np.all(np.isin(found, far)) and np.all(np.isfinite(distances))
        np.testing.assert_array_equal(found, truth(gallery, q[None, :], 5, far)[1])
    # None searches every face, as without a filter.
    np.testing.assert_array_equal(index.search(queries, 5, None)[1], index.search(queries, 5)[1])
    index.close()


def test_an_empty_filter_finds_nothing_and_unheld_ids_are_ignored(gallery: Gallery) -> None:
    index = gallery.open()
    ids, vectors = gallery.stored()
    queries = probes(gallery, 4)
    distances, found = index.search(queries, 5, np.empty(0, np.int64))
    assert found.shape == distances.shape == (4, 5)
    assert np.all(found == -1) and np.all(np.isinf(distances))
    # A removed face and an id never stored are allowed, but not held: never returned.
    index.remove(ids[:1])
    allowed = np.array([ids[0], ids[5], ids[9], 10**9], np.int64)
    distances, found = index.search(queries, 5, allowed)
    assert np.all(np.isin(found[:, :2], ids[[5, 9]])) and np.all(found[:, 2:] == -1)
    assert np.all(np.isinf(distances[:, 2:]))
    index.close()


def test_filtered_search_on_every_structure(crowd: Gallery) -> None:
    """Only allowed faces, k of them when there are k, with exact distances; the exact
    structure finds the true nearest allowed faces, an approximate one nearly all of them."""
    index = crowd.open()
    ids, vectors = crowd.stored()
    queries = probes(crowd, 40, seed=8)
    rng = np.random.default_rng(9)
    for count in (300, 60, 6):
        allowed = np.sort(rng.choice(ids, count, replace=False))
        distances, found = one_by_one_among(index, queries, 10, allowed)
        want_d, want_i = truth(crowd, queries, 10, allowed)
        assert np.all(np.isin(found[:, : min(10, count)], allowed))
        assert np.all(found[:, min(10, count) :] == -1)
        got = found[:, : min(10, count)]
        exact = np.linalg.norm(vectors[np.searchsorted(ids, got)] - queries[:, None, :], axis=2)
        np.testing.assert_allclose(distances[:, : min(10, count)], exact, rtol=0, atol=1e-4)
        if crowd.structure == "exact":
            np.testing.assert_array_equal(found, want_i)
        else:
            hits = [len(np.intersect1d(f, w)) / min(10, count)
                    for f, w in zip(got, want_i[:, : min(10, count)], strict=True)]
            assert np.mean(hits) >= 0.9, (count, np.mean(hits))
    index.close()


def one_by_one_among(
    index: VectorIndex, queries: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    found = [index.search(queries[q : q + 1], k, allowed) for q in range(len(queries))]
    return np.concatenate([d for d, _ in found]), np.concatenate([i for _, i in found])


# -- searches while the index changes ------------------------------------------------------------
def test_searches_run_safely_while_the_index_changes(crowd: Gallery) -> None:
    """Threads search in a loop, filtered or not, while another stores and adds faces,
    erases and removes others, removes and adds back others again and again, syncs and
    rebuilds: nothing raises, every answer is well formed with exact distances, holds only
    faces the index held at some point, never one whose removal had returned, always a face
    whose addition had returned, and k faces, as the index never holds fewer."""
    index = crowd.open()
    ids, vectors = crowd.stored()
    doomed, flicker, steady = ids[:60], ids[60:100], ids[100:]
    new = unit(np.random.default_rng(10).normal(size=(120, DIM)))
    k = 10
    # Written by the writer only, each entry replaced (never changed in place): the faces
    # the index may hold ("vectors": published before they are added), those whose
    # addition returned ("held"), those whose removal returned ("gone").
    state: dict[str, Any] = {"vectors": dict(zip(ids.tolist(), vectors, strict=True)),
                             "held": frozenset(ids.tolist()), "gone": frozenset()}
    errors: list[BaseException] = []
    done = threading.Event()
    overlapped = [0] * 4
    """Searches per reader that ended before the writer was done."""

    def writer() -> None:
        try:
            for r in range(60):
                part = new[2 * r : 2 * (r + 1)]
                added = crowd.add(part)
                state["vectors"] = {**state["vectors"], **dict(zip(added.tolist(), part,
                                                                   strict=True))}
                if r % 2:
                    assert index.add(added, part) == 2
                else:
                    assert index.sync() == 2
                state["held"] = state["held"] | set(added.tolist())
                erase_faces(crowd.store, [int(doomed[r])])
                assert index.remove(doomed[r : r + 1]) == 1
                state["gone"] = state["gone"] | {int(doomed[r])}
                if r in (20, 40):
                    (index.rebuild if r == 20 else index.optimize)()
                for j in range(4):  # removed from the index only, and added back
                    few = flicker[10 * j : 10 * (j + 1)]
                    assert index.remove(few) == 10
                    assert index.add(few, vectors[np.searchsorted(ids, few)]) == 10
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            errors.append(error)
        finally:
            done.set()

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        searches = 0
        try:
            while not done.is_set() or searches < 20:
                gone, held = state["gone"], state["held"]  # before the search
                allowed = None
                if searches % 3 == 1:  # allowed: 30 faces that stay, 40 that may go
                    allowed = np.sort(np.concatenate([
                        rng.choice(steady, 30, replace=False),
                        rng.choice(doomed, 20, replace=False),
                        rng.choice(flicker, 20, replace=False),
                    ]))
                if searches % 3 == 2:  # a face whose addition returned is found first
                    face = rng.choice(sorted(held - set(ids[:100].tolist())))
                    queries = state["vectors"][face][None, :]
                else:
                    queries = unit(vectors[rng.integers(len(vectors), size=1 + searches % 2)]
                                   + rng.normal(0, 0.1, (1 + searches % 2, DIM)))
                distances, found = index.search(queries, k, allowed)
                vector_of = state["vectors"]  # after: what the index may have held
                assert distances.shape == found.shape == (len(queries), k)
                assert found.dtype == np.int64
                assert np.all(found >= 0), "the index never holds fewer than k faces"
                assert not set(found.ravel().tolist()) & gone
                assert set(found.ravel().tolist()) <= vector_of.keys()
                if allowed is not None:
                    assert np.all(np.isin(found, allowed))
                if searches % 3 == 2:
                    assert found[0, 0] == face
                for q, row_d, row_i in zip(queries, distances, found, strict=True):
                    assert len(set(row_i.tolist())) == k
                    exact = np.linalg.norm(np.stack([vector_of[i] for i in row_i]) - q, axis=1)
                    np.testing.assert_allclose(row_d, exact, rtol=0, atol=1e-4)
                    assert np.all(np.diff(row_d) >= -1e-6)
                searches += 1
                overlapped[seed] += not done.is_set()
                time.sleep(0.001)  # leave the writer some CPU on small machines
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            errors.append(error)

    readers = [threading.Thread(target=reader, args=(seed,)) for seed in range(4)]
    for thread in [*readers, threading.Thread(target=writer)]:
        thread.start()
    done.wait(timeout=120)
    for thread in readers:
        thread.join(timeout=60)
    assert done.is_set() and not any(thread.is_alive() for thread in readers)
    if errors:
        raise errors[0]
    assert sum(overlapped) >= 10
    assert index.size == 600 + 120 - 60
    index.close()


def test_many_candidates_among_the_allowed_faces_farthest_from_the_query(
        empty: Gallery) -> None:
    """k = 1,000 among the 10 % of 20,000 faces that lie farthest from the query: longer
    lists than an index may return at once hold none of them, and still the true 1,000
    nearest allowed faces come back."""
    rng = np.random.default_rng(11)
    empty.add(unit(rng.normal(size=(20_000, DIM))))
    index = empty.open()
    ids, vectors = empty.stored()
    query = vectors[0] * 0.9
    far = np.sort(ids[np.argsort(np.linalg.norm(vectors - query, axis=1))[-2_000:]])
    distances, found = index.search(query[None, :], 1_000, far)
    want_d, want_i = truth(empty, query[None, :], 1_000, far)
    assert np.all(np.isin(found, far))
    np.testing.assert_allclose(distances, want_d, rtol=0, atol=1e-4)
    assert len(np.setdiff1d(found, want_i)) <= 2  # near-ties at the 1,000th may swap
    index.close()
