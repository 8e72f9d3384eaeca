"""Index tiers: exact for small galleries, IVF + HNSW + SQ8/PQ with an exact re-rank above
configurable sizes (small ones here), swapped in only when their measured recall is enough."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import facetrail
from conftest import PEOPLE, add_source, cli_json, run_cli
from facetrail.engine import Facetrail
from facetrail.index.ann import IndexPolicy, Tuning, choose_tier, list_count, measure
from facetrail.store import open_store
from stores import raw_sql, store_url_of

CASE = {"case_ref": "T-5", "purpose": "test"}
SMALL = {"index_exact_max_faces": 10}
"""Above 10 faces, the fixture gallery (a few hundred faces) leaves exact search."""
PROBES = [PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg",
          PEOPLE / "Angelina_Jolie" / "Angelina_Jolie_0003.jpg",
          PEOPLE / "Kit_Harington" / "Kit_Harington_0001.jpg"]


@pytest.fixture
def home(gallery: Facetrail) -> Iterator[Path]:
    """A private copy of the fixture gallery (flat index), closed so it can be reopened."""
    gallery.close()
    yield gallery.home


def faces_in(home: Path) -> int:
    store = open_store(store_url_of(home))
    try:
        return sum(store.face_count(model_id)[0] for model_id, _, _ in store.models())
    finally:
        store.close()


def tier(engine: Facetrail) -> str:
    return engine.index.info().kind


def lead_distance(engine: Facetrail) -> float:
    """The Euclidean distance of the lowest default threshold (the model's floor)."""
    floor = engine.score_floor
    return float(np.sqrt(2 * (1 - floor))) if engine.model.metric == "cosine" else 1 - floor


def stored(engine: Facetrail) -> tuple[np.ndarray, np.ndarray]:
    chunks = list(engine.store.iter_embeddings(engine.model_id))
    return np.concatenate([i for i, _ in chunks]), np.concatenate([v for _, v in chunks])


def one_by_one(engine: Facetrail, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Search each query alone, as a search request does (a batch of 20 or more queries
    takes FAISS's BLAS path in exact search, whose rounding differs in the last bits)."""
    found = [engine.index.search(queries[q : q + 1], 10) for q in range(len(queries))]
    return np.concatenate([d for d, _ in found]), np.concatenate([i for _, i in found])


def answers(engine: Facetrail) -> list[list[tuple[int, float]]]:
    return [
        [(c.face_id, c.score) for c in engine.search(p.read_bytes(), top=10, threshold=-1.0,
                                                     min_quality=0, **CASE).candidates]
        for p in PROBES
    ]


def test_tier_follows_gallery_size_and_memory_budget() -> None:
    policy = IndexPolicy(exact_max_faces=1000, memory_bytes=10 << 20)
    assert choose_tier(1000, 128, policy) == "flat"
    assert choose_tier(1001, 128, policy) == "pq"
    sq8 = IndexPolicy(exact_max_faces=1000, memory_bytes=10 << 20, codes="sq8")
    # 10 MiB holds 20k flat faces (520 B) but the size rule sends them to SQ8 (136 B) ...
    assert choose_tier(50_000, 128, sq8) == "sq8"
    # ... and what SQ8 cannot hold goes to PQ (40 B).
    assert choose_tier(100_000, 128, sq8) == "pq"
    # A budget too small for exact search leaves it even under the size threshold.
    assert choose_tier(1000, 128, IndexPolicy(exact_max_faces=1000, memory_bytes=500_000)) == "pq"
    assert [list_count(n) for n in (10, 233, 100_000, 1_000_000, 5_000_000)] == [
        1, 4, 256, 1024, 2048]


def test_recall_is_judged_by_its_lower_confidence_bound() -> None:
    truth = np.arange(1, 5001).reshape(500, 10)
    tuning = Tuning(1, 16, 2)
    # 50 lost neighbours, one per query for 50 queries: mean 0.99, 2 standard errors of
    # sqrt(0.09 x 0.1 x 500 / 499) / sqrt(500) = 0.00134 below it.
    found = truth.copy()
    found[:50, 9] = -1
    spread = measure(tuning, found, truth)
    assert (spread.recall, spread.lower, spread.queries, spread.k) == (0.99, 0.9873, 500, 10)
    # The same 50 lost by 5 queries (10 each) are less certain: a few queries decide it.
    found = truth.copy()
    found[:5] = -1
    bunched = measure(tuning, found, truth)
    assert bunched.recall == 0.99 and bunched.lower == 0.9811
    assert measure(tuning, truth, truth).lower == 1.0


def test_tiers_switch_with_size_and_budget_and_answer_like_exact(home: Path) -> None:
    n = faces_in(home)
    with facetrail.open(home) as engine:
        assert tier(engine) == "flat"
        limit = lead_distance(engine)
        exact = answers(engine)
        ids, vectors = stored(engine)
        queries = vectors + np.random.default_rng(7).normal(0, 0.03, vectors.shape).astype("f4")
        exact_d, exact_i = one_by_one(engine, queries)
    assert all(exact) and len(ids) == n and np.array_equal(ids, np.arange(1, n + 1))
    sq8 = {**SMALL, "index_codes": "sq8"}
    for overrides, want in ((SMALL, "pq"), (sq8, "sq8"), ({**sq8, "index_memory_mb": 0.02}, "pq")):
        with facetrail.open(home, **overrides) as engine:  # switches on open
            info = engine.index.info()
            assert (info.backend, info.kind, info.faces) == ("faiss", want, n)
            assert info.details["planned_tier"] == want
            assert info.recall_at_10 is not None and info.recall_at_10 >= 0.99
            assert info.details["recall_queries"] == n
            assert info.details["rerank_bytes"] == n * (4 * 128 + 8)
            assert info.memory_per_face < 520
            assert answers(engine) == exact
            d, i = one_by_one(engine, queries)
            # Every distance returned is exact; at most 1% of the true top 10 is missed.
            truth = np.linalg.norm(vectors[i - 1] - queries[:, None, :], axis=2)
            assert np.allclose(d, truth, rtol=0, atol=2e-6)
            same = i == exact_i
            assert np.array_equal(d[same], exact_d[same])
            hits = [len(np.intersect1d(a, b)) for a, b in zip(i, exact_i, strict=True)]
            recall = sum(hits) / (10 * len(hits))
            # The index was tuned to recall 0.99 on other queries (its stored vectors);
            # on these ~230 noisy ones the sampling error is about 0.006, so 0.98 is the
            # floor two standard errors allow.
            assert recall >= 0.98
            # Nothing within the lowest default threshold (the model's floor) is missed.
            leads = exact_d <= limit
            assert leads.sum() > n and np.array_equal(i[leads], exact_i[leads])
    with facetrail.open(home) as engine:  # default settings: back to exact search
        assert tier(engine) == "flat" and answers(engine) == exact
        assert not list(home.glob("index/*.ivf")) and not list(home.glob("index/*.f32"))


def test_recall_floor_keeps_the_previous_index(home: Path) -> None:
    n = faces_in(home)
    with facetrail.open(home, **SMALL, index_max_nprobe=1) as engine:
        # One list probed of several cannot reach recall 0.99: the exact index stays.
        index = engine.index
        assert tier(engine) == "flat" and index.size == n
        report = index.optimize()
        assert report.refused and report.kind == "flat" and report.built_kind == "pq"
        assert report.recall_at_10 is not None and report.recall_at_10 < 0.99
        assert report.details["recall_queries"] == n
        assert "lower bound" in report.message and "under the floor 0.99" in (report.why or "")
        assert "NOT swapped in" in report.message and "flat index stays" in report.message
        info = index.info()
        assert info.refused and "refused" in (info.why or "") and "lower bound" in (info.why or "")
        assert not list(home.glob("index/*.ivf")) and not list(home.glob("index/*.f32"))
        assert answers(engine)[0][0][1] > 0.5
    with facetrail.open(home, **SMALL, index_recall_floor=0.5, index_max_nprobe=1) as engine:
        report = engine.index.optimize()
        assert not report.refused and tier(engine) == "pq" and report.details["nprobe"] == 1


def test_adds_and_removals_without_rebuild(home: Path, tmp_path: Path) -> None:
    n = faces_in(home)
    with facetrail.open(home, **SMALL) as engine:
        index = engine.index
        built = index.info().built_at
        files = sorted(p.name for p in (home / "index").iterdir())
        best = answers(engine)[0][0][0]
        assert index.remove([best]) == 1 and index.remove([best]) == 0
        assert index.size == n - 1
        assert best not in [i for i, _ in answers(engine)[0]]
    extra = tmp_path / "extra"
    extra.mkdir()
    from PIL import Image

    Image.open(PROBES[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(extra / "m.jpg")
    add_source(home, "extra", extra)
    run_cli(home, "ingest", "extra")
    # Erase two faces in the store itself: the index follows by removing them.
    db = store_url_of(home)
    gone = [r[0] for r in raw_sql(
        db, f"SELECT id FROM faces WHERE id != {best} ORDER BY id LIMIT 2")]
    raw_sql(db, f"DELETE FROM faces WHERE id IN ({gone[0]}, {gone[1]})")
    with facetrail.open(home, **SMALL) as engine:
        index = engine.index
        # The store still holds `best` (only the index dropped it), so it is back; the new
        # face is in; the two erased ones are out. All without a new build.
        assert index.size == n - 2 + 1
        assert index.info().built_at == built and tier(engine) == "pq"
        assert sorted(p.name for p in (home / "index").iterdir()) == files
        top = engine.search(PROBES[0].read_bytes(), top=3, **CASE).candidates
        assert top[0].face_id == best
        assert any(a.location.endswith("m.jpg") for c in top for a in c.appearances)
        ids, vectors = stored(engine)
        distances, found = index.search(vectors, 10)
        # Every stored face finds itself (or an identical twin: the fixtures hold one photo
        # twice), and no erased face is ever returned.
        assert np.all(distances[:, 0] == 0) and np.mean(found[:, 0] == ids) > 0.99
        assert not set(gone) & set(found.ravel().tolist())


def test_rebuild_from_the_store_is_reproducible(home: Path) -> None:
    def build() -> tuple[bytes, dict[str, object]]:
        with facetrail.open(home, **SMALL) as engine:
            report = engine.index.optimize()
            assert not report.refused and report.kind == "pq"
        meta = json.loads(next(home.glob("index/*.json")).read_text())
        ivf = home / "index" / next(p.name for p in (home / "index").glob("*.ivf"))
        return ivf.read_bytes(), {k: meta[k] for k in ("tuning", "count", "type", "rows")}

    first, second = build(), build()
    assert first == second and len(first[0]) > faces_in(home) * 32


def test_index_info_and_optimize_cli(home: Path) -> None:
    n = faces_in(home)
    out = run_cli(home, "index", "info").stdout
    assert re.search(r"^ +backend: faiss\n +kind: flat\n", out, re.M), out
    assert f"faces: {n}" in out and "recall@10: 1.0" in out
    assert "faiss details:" in out and "structure: IndexIDMap2(IndexFlatL2): exact" in out
    env = {"FACETRAIL_INDEX_EXACT_MAX_FACES": "10"}
    out = run_cli(home, "index", "optimize", env_extra=env).stdout
    assert re.search(rf"^pq index swapped in: {n} faces, recall@10 (1\.0|0\.99\d*) on {n} "
                     r"sampled queries \(lower bound (1\.0|0\.99\d*), floor 0\.99\)$",
                     out, re.M), out
    assert re.search(r"^ +in use: pq$", out, re.M) and re.search(r"took: [\d.]+ s$", out, re.M)
    assert re.search(r"^ +nprobe: \d\n +ef_search: 16\n +shortlist_factor: \d+$", out, re.M), out
    info = json.loads(run_cli(home, "index", "info", "--json", env_extra=env).stdout)
    details = info["details"]
    assert (info["backend"], info["kind"], info["faces"]) == ("faiss", "pq", n)
    assert re.match(r"IVF\d+_HNSW32,PQ64x4fs", details["structure"])
    assert info["recall_at_10"] >= 0.99 and details["recall_queries"] == n
    assert 40 <= info["memory_per_face"] < 136 and details["rerank_bytes"] == n * 520
    assert info["refused"] is False and info["built_at"]
    out = run_cli(home, "index", "info", env_extra=env).stdout
    assert re.search(r"rerank_bytes: [\d,]+$", out, re.M), out
    assert f"nprobe: {details['nprobe']}" in out and "ef_search: 16" in out
    assert re.search(r"recall@10: [\d.]+$", out, re.M) and f"recall_queries: {n}" in out
    proc = run_cli(home, "index", "optimize", check=False,
                   env_extra={**env, "FACETRAIL_INDEX_MAX_NPROBE": "1"})
    assert proc.returncode == 1 and "NOT swapped in" in proc.stdout
    assert "pq index stays" in proc.stdout
    assert re.search(r"in use: pq\n +built: pq, refused$", proc.stdout, re.M), proc.stdout
    report = json.loads(run_cli(home, "index", "rebuild", "--json", env_extra=env).stdout)
    assert (report["backend"], report["kind"], report["faces"]) == ("faiss", "pq", n)
    assert report["refused"] is False and report["details"]["recall_queries"] == n
    assert cli_json(home, "stats")["index_faces"] == n  # type: ignore[index]
