"""Search latency: facetrail's FAISS index against NumPy brute force, at several gallery sizes.

Run from the repository root:

    .venv/bin/python bench/search_latency.py
    .venv/bin/python bench/search_latency.py --sizes 10000,100000,1000000 --queries 200 --json

For each gallery size the same single-face queries go, one at a time, to

- facetrail: the real ``FaissIndex`` class (``IndexIDMap2(IndexFlatL2(128))``, exact search,
  ``sqrt`` of the squared distances), filled through a small in-memory stand-in for the store,
  asked for the top 20 as ``facetrail search`` does by default;
- the baseline: what ``face_recognition.face_distance`` does, ``np.linalg.norm(gallery - q,
  axis=1)`` over a float64 gallery (face_recognition's encodings are float64), then
  ``argpartition`` + ``argsort`` for the top 20.

The two are timed alternately, query by query, so machine noise hits both alike; the ratio
numpy/faiss is the number to compare across runs. Both searches are exact, so their top-10 ids
must agree: recall@10 of faiss against numpy is printed and should be 1.0.

Gallery vectors are real dlib descriptors, tiled to the wanted size with Gaussian noise
(``--sigma`` per dimension). The descriptors come from ingesting ``--data`` once into a
temporary facetrail home; they are cached in ``bench/results/descriptors.npy``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces-small"
RESULTS = REPO / "bench" / "results"
CACHE = RESULTS / "descriptors.npy"
K = 20
"""Candidates per query: facetrail's default ``top``."""
RECALL_AT = 10
WARMUP = 5
ROUNDS = 4


# -- real descriptors ----------------------------------------------------------------------------
def model_key() -> str:
    from facetrail.faces.dlib_backend import DlibBackend

    return DlibBackend().model.key


def load_descriptors(data: Path, refresh: bool = False) -> np.ndarray:
    """Real dlib descriptors of every face in ``data``, float32 (n, 128), in a fixed order.

    Computed by ingesting ``data`` into a temporary facetrail home, then cached in
    ``bench/results/descriptors.npy`` (with a ``.json`` sidecar naming the model and folder).
    """
    meta_path = CACHE.with_suffix(".json")
    wanted = {"model": model_key(), "data": str(data)}
    cached = not refresh and CACHE.exists() and meta_path.exists()
    if cached and json.loads(meta_path.read_text()) == wanted:
        return np.load(CACHE)
    import facetrail

    print(f"computing descriptors: ingesting {data} (about a minute) ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-") as home, facetrail.open(home) as ft:
        ft.add_source(
            "bench", "folder", data,
            lawful_basis="benchmark on a public test set",
            purpose="search latency benchmark",
            retention_days=1,
        )
        ft.ingest("bench")
        chunks = [vectors for _, vectors in ft.store.iter_embeddings(ft.model_id)]
    vectors = np.concatenate(chunks).astype(np.float32)
    # Face ids follow the order in which workers finished; sort so the cache is reproducible.
    vectors = vectors[np.lexsort(vectors.T[::-1])]
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.save(CACHE, vectors)
    meta_path.write_text(json.dumps(wanted))
    return vectors


# -- synthetic gallery and queries ---------------------------------------------------------------
def split(
    descriptors: np.ndarray, holdout: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(gallery base, held-out query base): disjoint sets of real descriptors."""
    order = rng.permutation(len(descriptors))
    return descriptors[order[holdout:]], descriptors[order[:holdout]]


def noisy_tiles(
    base: np.ndarray, n: int, sigma: float, rng: np.random.Generator, chunk: int = 100_000
) -> np.ndarray:
    """``n`` float32 vectors: ``base`` repeated cyclically, each copy plus N(0, sigma^2) noise
    per dimension, so that no two gallery vectors are equal."""
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = base[np.arange(start, stop) % len(base)]
        out[start:stop] = rows + rng.normal(0.0, sigma, rows.shape).astype(np.float32)
    return out


# -- the two searches ----------------------------------------------------------------------------
class ArrayStore:
    """Just enough of facetrail's ``Store`` for ``FaissIndex``: the gallery as faces 1..n."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def face_count(self, model_id: int) -> tuple[int, int]:
        return len(self.vectors), len(self.vectors)

    def iter_embeddings(
        self, model_id: int, after_id: int = 0, batch: int = 65536
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(after_id, len(self.vectors), batch):
            stop = min(len(self.vectors), start + batch)
            yield np.arange(start + 1, stop + 1, dtype=np.int64), self.vectors[start:stop]


def build_faiss_index(gallery: np.ndarray, directory: Path) -> Any:
    """facetrail's own ``FaissIndex`` over ``gallery`` (face ids 1..n)."""
    from facetrail.faces.dlib_backend import DlibBackend
    from facetrail.index.faiss_index import FaissIndex
    from facetrail.store.base import Store

    store = cast(Store, ArrayStore(gallery))
    return FaissIndex(directory, store, DlibBackend().model, model_id=1)


def numpy_search(gallery: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """face_recognition's ``face_distance``, then the top ``k`` (ids are row + 1)."""
    distances = np.linalg.norm(gallery - query, axis=1)
    top = np.argpartition(distances, k)[:k]
    top = top[np.argsort(distances[top])]
    return distances[top], top + 1


# -- measurement ---------------------------------------------------------------------------------
@dataclass
class SizeResult:
    size: int
    queries: int
    build_seconds: float
    faiss_p50_ms: float
    faiss_p99_ms: float
    numpy_p50_ms: float
    numpy_p99_ms: float
    ratio_p50: float
    """numpy p50 / faiss p50."""
    ratio_p99: float
    recall_at_10: float
    """Mean over queries of |faiss top 10 & numpy top 10| / 10."""
    recall_at_10_min: float


Search = Callable[[int], np.ndarray]
"""Runs query number ``q``; returns the ranked ids."""


def timed_rounds(
    searches: dict[str, Search], n: int, rounds: int
) -> tuple[dict[str, np.ndarray], dict[str, list[np.ndarray]]]:
    """Time each search on queries 0..n-1: per-query milliseconds, and the ids returned.

    The queries are dealt into ``rounds`` groups; in each round every method runs its whole
    group, the order of the methods alternating from round to round, so slow spells of the
    machine fall on both. Methods are not interleaved query by query: FAISS's OpenMP threads
    keep spinning for a while after each search and would slow a NumPy search right after it.
    The first search after a switch is repeated unmeasured, as a warm-up.
    """
    names = list(searches)
    ms = {name: np.zeros(n) for name in names}
    ids: dict[str, list[np.ndarray]] = {name: [np.empty(0)] * n for name in names}
    for r in range(rounds):
        group = range(r, n, rounds)
        if not group:
            continue
        for name in names if r % 2 == 0 else names[::-1]:
            search = searches[name]
            search(group[0])
            for q in group:
                t0 = time.perf_counter_ns()
                ids[name][q] = search(q)
                ms[name][q] = (time.perf_counter_ns() - t0) / 1e6
    return ms, ids


def bench_size(
    size: int,
    gallery_base: np.ndarray,
    queries: np.ndarray,
    args: argparse.Namespace,
    rng: np.random.Generator,
) -> SizeResult:
    gallery = noisy_tiles(gallery_base, size, args.sigma, rng)
    numpy_gallery = gallery.astype(args.numpy_dtype)  # float64: face_recognition's dtype
    numpy_queries = queries.astype(args.numpy_dtype)
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-index-") as directory:
        started = time.perf_counter()
        index = build_faiss_index(gallery, Path(directory))
        build_seconds = time.perf_counter() - started

        searches: dict[str, Search] = {
            "faiss": lambda q: index.search(queries[q : q + 1], K)[1][0],
            "numpy": lambda q: numpy_search(numpy_gallery, numpy_queries[q], K)[1],
        }
        for q in range(WARMUP):
            for search in searches.values():
                search(q)
        # Fit the number of queries to the time budget, from one more (faiss + numpy) pair.
        started = time.perf_counter()
        for search in searches.values():
            search(0)
        pair = time.perf_counter() - started
        n = max(args.min_queries, min(len(queries), int(args.budget / max(pair, 1e-9))))
        n = min(n, len(queries))
        ms, ids = timed_rounds(searches, n, ROUNDS)

    recalls = [
        len(set(ids["faiss"][q][:RECALL_AT].tolist()) & set(ids["numpy"][q][:RECALL_AT].tolist()))
        / RECALL_AT
        for q in range(n)
    ]
    f50, f99 = np.percentile(ms["faiss"], [50, 99])
    n50, n99 = np.percentile(ms["numpy"], [50, 99])
    return SizeResult(
        size=size, queries=n, build_seconds=round(build_seconds, 3),
        faiss_p50_ms=round(float(f50), 3), faiss_p99_ms=round(float(f99), 3),
        numpy_p50_ms=round(float(n50), 3), numpy_p99_ms=round(float(n99), 3),
        ratio_p50=round(float(n50 / f50), 2), ratio_p99=round(float(n99 / f99), 2),
        recall_at_10=round(float(np.mean(recalls)), 4),
        recall_at_10_min=round(float(np.min(recalls)), 4),
    )


def print_table(results: list[SizeResult], header: dict[str, Any]) -> None:
    print(
        f"descriptors: {header['descriptors']} real ({header['gallery_base']} gallery base, "
        f"{header['holdout']} held out for queries), noise sigma {header['sigma']}, k={K}, "
        f"numpy {header['numpy_dtype']}, faiss {header['faiss_version']} "
        f"({header['faiss_threads']} OpenMP threads), numpy {header['numpy_version']}"
    )
    columns = ("size", "queries", "faiss p50", "faiss p99", "numpy p50", "numpy p99",
               "np/faiss p50", "np/faiss p99", "recall@10")
    print("  ".join(f"{c:>12}" for c in columns))
    for r in results:
        recall = f"{r.recall_at_10:.4f}"
        if r.recall_at_10_min < 1:
            recall += f" (min {r.recall_at_10_min})"
        cells = (
            f"{r.size:,}", str(r.queries),
            f"{r.faiss_p50_ms:.2f} ms", f"{r.faiss_p99_ms:.2f} ms",
            f"{r.numpy_p50_ms:.2f} ms", f"{r.numpy_p99_ms:.2f} ms",
            f"{r.ratio_p50:.1f}x", f"{r.ratio_p99:.1f}x",
            recall,
        )
        print("  ".join(f"{c:>12}" for c in cells))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated gallery sizes (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=200,
                        help="queries per size (default: %(default)s)")
    parser.add_argument("--min-queries", type=int, default=50,
                        help="never fewer queries than this, whatever the budget "
                        "(default: %(default)s)")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds of timed queries per size; fewer queries are run if "
                        "200 would take longer (default: %(default)s)")
    parser.add_argument("--sigma", type=float, default=0.01,
                        help="std-dev of the Gaussian noise per dimension (default: %(default)s)")
    parser.add_argument("--holdout", type=int, default=50,
                        help="real descriptors kept out of the gallery as query bases "
                        "(default: %(default)s)")
    parser.add_argument("--numpy-dtype", choices=("float64", "float32"), default="float64",
                        help="dtype of the NumPy gallery; face_recognition's encodings are "
                        "float64 (default: %(default)s)")
    parser.add_argument("--faiss-threads", type=int, default=0,
                        help="OpenMP threads for FAISS; 0 keeps FAISS's default, one per core, "
                        "which is what facetrail runs with (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder whose faces give the real descriptors "
                        f"(default: {DEFAULT_DATA})")
    parser.add_argument("--refresh", action="store_true",
                        help=f"recompute the descriptors instead of reading {CACHE}")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    if min(sizes) <= K:
        raise SystemExit(f"gallery sizes must be above k={K}")
    import faiss

    if args.faiss_threads:
        faiss.omp_set_num_threads(args.faiss_threads)
    descriptors = load_descriptors(args.data.resolve(), args.refresh)
    if args.holdout >= len(descriptors):
        raise SystemExit(f"--holdout {args.holdout} leaves no gallery: only "
                         f"{len(descriptors)} descriptors")
    rng = np.random.default_rng(args.seed)
    gallery_base, query_base = split(descriptors, args.holdout, rng)
    queries = noisy_tiles(query_base, args.queries, args.sigma, rng)
    header = {
        "descriptors": len(descriptors), "gallery_base": len(gallery_base),
        "holdout": len(query_base), "sigma": args.sigma, "k": K,
        "numpy_dtype": args.numpy_dtype, "faiss_version": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(), "numpy_version": np.__version__,
    }
    results = []
    for size in sizes:
        print(f"size {size:,} ...", file=sys.stderr)
        results.append(bench_size(size, gallery_base, queries, args, rng))
    if args.json:
        json.dump({**header, "results": [asdict(r) for r in results]}, sys.stdout, indent=2)
        print()
    else:
        print_table(results, header)


if __name__ == "__main__":
    main()
