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

Gallery vectors are real descriptors of the face model ``--model`` (dlib by default), tiled to
the wanted size with Gaussian noise (``--sigma`` per dimension; rescaled to unit length for a
cosine model such as yunet-sface). The descriptors come from ingesting ``--data`` once into a
temporary facetrail home; they are cached in ``bench/results/descriptors-<model>.npy``
(``_gallery.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from _gallery import DEFAULT_DATA, cache_path, load_descriptors, model_info, noisy_tiles
from _machine import system_busy_seconds

K = 20
"""Candidates per query: facetrail's default ``top``."""
RECALL_AT = 10
TIE_RTOL = 1e-5
"""Relative distance difference below which two neighbours count as tied (float32 rounding)."""
WARMUP = 5
ROUNDS = 4


# -- synthetic gallery and queries ---------------------------------------------------------------
def split(
    descriptors: np.ndarray, holdout: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(gallery base, held-out query base): disjoint sets of real descriptors."""
    order = rng.permutation(len(descriptors))
    return descriptors[order[holdout:]], descriptors[order[:holdout]]


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


def build_faiss_index(gallery: np.ndarray, directory: Path, model: str) -> Any:
    """facetrail's own ``FaissIndex`` over ``gallery`` (face ids 1..n) of face model ``model``."""
    from facetrail.index.faiss_index import FaissIndex
    from facetrail.store.base import Store

    store = cast(Store, ArrayStore(gallery))
    return FaissIndex(directory, store, model_info(model), model_id=1)


def numpy_search(gallery: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """face_recognition's ``face_distance``, then the top ``k`` (ids are row + 1)."""
    distances = np.linalg.norm(gallery - query, axis=1)
    top = np.argpartition(distances, k)[:k]
    top = top[np.argsort(distances[top])]
    return distances[top], top + 1


# -- measurement ---------------------------------------------------------------------------------
@dataclass
class MethodResult:
    method: str
    p50_ms: float
    p99_ms: float
    numpy_ratio_p50: float
    """numpy p50 / this method's p50: how many times faster than the baseline."""
    numpy_ratio_p99: float
    recall_at_10: float
    """Mean over queries of |this top 10 & numpy top 10| / 10; 1.0 for an exact search."""
    recall_at_10_min: float
    non_tie_misses: int
    """Queries whose top 10 holds an id farther than the true 10th neighbour, by more than a
    float32 rounding (``TIE_RTOL``): real errors, where a recall below 1 is otherwise ties."""


@dataclass
class SizeResult:
    size: int
    queries: int
    build_seconds: float
    """Time to build facetrail's FaissIndex (add the vectors, write the index file)."""
    other_processes_cores: float
    """CPU other processes of the machine used while the queries were timed, in cores."""
    methods: list[MethodResult]


Search = Callable[[int], np.ndarray]
"""Runs query number ``q``; returns the ranked ids."""


def timed_rounds(
    searches: dict[str, Search], n: int, rounds: int
) -> tuple[dict[str, np.ndarray], dict[str, list[np.ndarray]]]:
    """Time each search on queries 0..n-1: per-query milliseconds, and the ids returned.

    The queries are dealt into ``rounds`` groups; in each round every method runs its whole
    group, the order of the methods reversing from round to round, so slow spells of the
    machine fall on all of them. Methods are not interleaved query by query: FAISS's OpenMP
    threads keep spinning for a while after each search and would slow a NumPy search right
    after it. The first search after a switch is repeated unmeasured, as a warm-up.
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


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = RECALL_AT) -> float:
    """Share of the true top ``k`` ids that ``found``'s top ``k`` holds."""
    return len(set(found[:k].tolist()) & set(truth[:k].tolist())) / k


def is_near_tie_only(
    found: np.ndarray, gallery: np.ndarray, query: np.ndarray, truth: np.ndarray
) -> bool:
    """True when every id of ``found``'s top 10 is, in exact (float64) distance, no farther
    than the true 10th neighbour up to ``TIE_RTOL``: any disagreement is a tie at the cut."""
    q = query.astype(np.float64)
    exact = np.linalg.norm(gallery[found[:RECALL_AT] - 1].astype(np.float64) - q, axis=1)
    tenth = np.linalg.norm(gallery[truth[RECALL_AT - 1] - 1].astype(np.float64) - q)
    return bool(np.all(exact <= tenth * (1 + TIE_RTOL)))


def faiss_label(threads: int) -> str:

    if threads == 0:
        return "facetrail FaissIndex"
    return f"raw faiss, {threads} thread" + ("s" if threads > 1 else "")


def bench_size(
    size: int,
    gallery_base: np.ndarray,
    queries: np.ndarray,
    args: argparse.Namespace,
    rng: np.random.Generator,
) -> SizeResult:
    import faiss

    default_threads = faiss.omp_get_max_threads()
    gallery = noisy_tiles(gallery_base, size, args.sigma, rng, args.unit)
    numpy_gallery = gallery.astype(args.numpy_dtype)  # float64: face_recognition's dtype
    numpy_queries = queries.astype(args.numpy_dtype)
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-index-") as directory:
        started = time.perf_counter()
        index = build_faiss_index(gallery, Path(directory), args.model)
        build_seconds = time.perf_counter() - started

        def faiss_search(threads: int) -> Search:
            def search(q: int) -> np.ndarray:
                if threads == 0:  # as facetrail runs it
                    return index.search(queries[q : q + 1], K)[1][0]
                # The same FAISS structure, bypassing facetrail's choice of thread count.
                faiss.omp_set_num_threads(threads)
                return index._index.search(queries[q : q + 1], K)[1][0]

            return search

        numpy_name = f"numpy {args.numpy_dtype}"
        searches: dict[str, Search] = {faiss_label(t): faiss_search(t) for t in args.threads}
        searches[numpy_name] = lambda q: numpy_search(numpy_gallery, numpy_queries[q], K)[1]

        for q in range(WARMUP):
            for search in searches.values():
                search(q)
        # Fit the number of queries to the time budget, from one more round of every method.
        started = time.perf_counter()
        for search in searches.values():
            search(0)
        per_query = time.perf_counter() - started
        n = max(args.min_queries, min(len(queries), int(args.budget / max(per_query, 1e-9))))
        n = min(n, len(queries))
        busy, own, started = system_busy_seconds(), process_cpu_seconds(), time.perf_counter()
        ms, ids = timed_rounds(searches, n, ROUNDS)
        wall = time.perf_counter() - started
        others = system_busy_seconds() - busy - (process_cpu_seconds() - own)
        faiss.omp_set_num_threads(default_threads)

    base50, base99 = np.percentile(ms[numpy_name], [50, 99])
    methods = []
    for name in searches:
        p50, p99 = np.percentile(ms[name], [50, 99])
        recalls = [recall_at(ids[name][q], ids[numpy_name][q]) for q in range(n)]
        non_tie = sum(
            1
            for q in range(n)
            if recalls[q] < 1
            and not is_near_tie_only(ids[name][q], gallery, queries[q], ids[numpy_name][q])
        )
        methods.append(
            MethodResult(
                method=name, p50_ms=round(float(p50), 3), p99_ms=round(float(p99), 3),
                numpy_ratio_p50=round(float(base50 / p50), 2),
                numpy_ratio_p99=round(float(base99 / p99), 2),
                recall_at_10=round(float(np.mean(recalls)), 4),
                recall_at_10_min=round(float(np.min(recalls)), 4),
                non_tie_misses=non_tie,
            )
        )
    return SizeResult(size, n, round(build_seconds, 2), round(max(0.0, others) / wall, 2), methods)


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def print_table(results: list[SizeResult], header: dict[str, Any]) -> None:
    print(
        f"descriptors: {header['descriptors']} real {header['model']} "
        f"({header['gallery_base']} gallery base, {header['holdout']} held out for queries), "
        f"noise sigma {header['sigma']}, k={K}; "
        f"faiss {header['faiss_version']}, numpy {header['numpy_version']}, "
        f"cpu_count {header['cpu_count']}"
    )
    columns = ("size", "method", "queries", "p50 ms", "p99 ms", "numpy/this p50",
               "numpy/this p99", "recall@10")
    widths = (10, 26, 7, 8, 8, 14, 14, 9)
    print("  ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for r in results:
        for m in r.methods:
            recall = f"{m.recall_at_10:.4f}"
            if m.recall_at_10_min < 1:
                ties = "ties" if not m.non_tie_misses else f"{m.non_tie_misses} NOT ties"
                recall += f" (min {m.recall_at_10_min}, {ties})"
            cells = (
                f"{r.size:,}", m.method, str(r.queries), f"{m.p50_ms:.3f}", f"{m.p99_ms:.3f}",
                f"{m.numpy_ratio_p50:.1f}x", f"{m.numpy_ratio_p99:.1f}x", recall,
            )
            print("  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    build = ", ".join(f"{r.size:,}: {r.build_seconds:.2f} s" for r in results)
    print(f"FaissIndex build (add + write the index file): {build}")
    load = ", ".join(f"{r.size:,}: {r.other_processes_cores:.2f}" for r in results)
    print(f"other processes' load while timing (cores): {load}")


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
    parser.add_argument("--faiss-threads", default="0",
                        help="comma-separated OpenMP thread counts to time FAISS with; 0 "
                        "leaves the choice to facetrail, which searches single queries on one "
                        "thread (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder whose faces give the real descriptors "
                        f"(default: {DEFAULT_DATA})")
    parser.add_argument("--model", default="dlib",
                        help="face model whose descriptors make the gallery (default: "
                        "%(default)s; yunet-sface gives unit vectors)")
    parser.add_argument("--refresh", action="store_true",
                        help="recompute the descriptors instead of reading "
                        f"{cache_path('MODEL')}")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    if min(sizes) <= K:
        raise SystemExit(f"gallery sizes must be above k={K}")
    import faiss

    args.threads = [int(t) for t in args.faiss_threads.split(",") if t.strip()]
    descriptors = load_descriptors(args.data.resolve(), args.model, args.refresh)
    args.unit = model_info(args.model).metric == "cosine"
    if args.holdout >= len(descriptors):
        raise SystemExit(f"--holdout {args.holdout} leaves no gallery: only "
                         f"{len(descriptors)} descriptors")
    rng = np.random.default_rng(args.seed)
    gallery_base, query_base = split(descriptors, args.holdout, rng)
    queries = noisy_tiles(query_base, args.queries, args.sigma, rng, args.unit)
    header = {
        "model": args.model, "descriptors": len(descriptors), "gallery_base": len(gallery_base),
        "holdout": len(query_base), "sigma": args.sigma, "k": K,
        "numpy_dtype": args.numpy_dtype, "faiss_version": faiss.__version__,
        "faiss_default_threads": faiss.omp_get_max_threads(), "numpy_version": np.__version__,
        "cpu_count": os.cpu_count(),
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
