"""ANN index tiers: facetrail's approximate indexes against exact FAISS and NumPy brute force.

Run from the repository root:

    .venv/bin/python bench/ann_search.py                          # 100k, 1M and 5M faces
    .venv/bin/python bench/ann_search.py --sizes 100000           # a quick run (~2 min)
    .venv/bin/python bench/ann_search.py --sizes 1000000 --json

For each gallery size, the same galleries go to

- ``exact``: facetrail's ``FaissIndex`` in its flat tier (``IndexIDMap2(IndexFlatL2)``);
- ``pq`` and ``sq8``: facetrail's ``FaissIndex`` forced into each approximate tier (a policy
  with ``exact_max_faces=0``, and ``codes="sq8"`` for ``sq8``). Their build
  is a real ``optimize()``: vector file, k-means, HNSW quantizer, adding, then the recall
  measurement and tuning (nprobe, efSearch, shortlist) against the 0.99 floor;
- ``numpy``: ``np.linalg.norm(gallery - q, axis=1)`` over a float32 gallery (in chunks of 1M
  rows to bound memory), then ``argpartition`` + ``argsort``; above 1M faces only a sample of
  the queries (``--numpy-sample``), as it takes ~0.1 s per million faces and query.

Reported per method: build seconds; bytes per face in RAM (index structures) and on disk (the
float32 re-rank file); p50 and p99 latency of single queries (k = 20, as ``facetrail search``
asks) and of batches of ``--batch`` queries; recall@1 and recall@10 against exact FAISS.
Latency ratios to exact FAISS are measured in the same process; the load other processes put
on the machine while timing is printed (the cores are shared).

Gallery and queries come from real dlib descriptors (see ``identity_gallery`` and
bench/README.md for the generator).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from _gallery import DEFAULT_DATA, load_descriptors, model_info
from _machine import system_busy_seconds
from search_latency import ArrayStore, process_cpu_seconds, split, timed_rounds

K = 20
ROUNDS = 4
MODEL = "dlib"
"""The face model whose real descriptors seed the generator (its distances are the ones
``identity_gallery`` documents)."""
NUMPY_CHUNK = 1_000_000


# -- generator -----------------------------------------------------------------------------------
def identity_gallery(
    real: np.ndarray, n: int, photos: int, within: float, queries: int,
    rng: np.random.Generator, chunk: int = 250_000,
) -> tuple[np.ndarray, np.ndarray]:
    """(gallery (n, dim), queries (queries, dim)), float32.

    The gallery starts with the ``real`` descriptors themselves. The rest are synthetic
    people, ``photos`` faces each: an identity centre is drawn from a Gaussian with the mean
    and covariance of the real descriptors (scaled by sqrt(1 - within^2)), each photo adds
    noise drawn from the same covariance scaled by ``within``. So the whole gallery has the
    real descriptors' mean and covariance (their 128 principal directions and spread), two
    photos of one synthetic person are ``within`` x sqrt(2 x trace) apart (0.41 at 0.5, the
    distance of two real photos of one person), two people ~0.82 apart (as real strangers).
    Queries are a new photo of each of the first ``queries`` synthetic people.
    """
    dim = real.shape[1]
    mean = real.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(real.T))
    basis = (vectors * np.sqrt(np.maximum(values, 0))).T  # z @ basis ~ N(0, cov)
    between = math.sqrt(1 - within**2)
    out = np.empty((n, dim), np.float32)
    out[: len(real)] = real
    people = math.ceil((n - len(real)) / photos)
    first_centres = None
    for start in range(0, people, chunk):
        count = min(chunk, people - start)
        centres = mean + between * rng.standard_normal((count, dim)) @ basis
        if first_centres is None:
            first_centres = centres[:queries]
        rows = np.repeat(centres, photos, axis=0)
        rows += within * rng.standard_normal(rows.shape) @ basis
        begin = len(real) + start * photos
        stop = min(n, begin + len(rows))
        out[begin:stop] = rows[: stop - begin]
    assert first_centres is not None
    query_rows = first_centres + within * rng.standard_normal(first_centres.shape) @ basis
    return out, query_rows.astype(np.float32)


# -- methods -------------------------------------------------------------------------------------
@dataclass
class MethodResult:
    method: str
    structure: str
    build_seconds: float
    ram_bytes_per_face: float
    """Index structures: codes, ids, coarse quantizer (``FaissIndex.info().memory_bytes``)."""
    disk_bytes_per_face: float
    """The memory-mapped float32 re-rank vectors and ids; 0 for exact and NumPy."""
    queries: int
    p50_ms: float
    p99_ms: float
    batch_p50_ms: float
    """p50 of one batch of ``--batch`` queries, whole batch."""
    batch_p99_ms: float
    exact_ratio_p50: float
    """exact FAISS p50 / this p50, single queries, same process."""
    recall_at_1: float
    recall_at_10: float
    tuning: str


@dataclass
class SizeResult:
    size: int
    other_processes_cores: float
    methods: list[MethodResult]


def numpy_search(gallery: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    distances = np.concatenate([
        np.linalg.norm(gallery[s : s + NUMPY_CHUNK] - query, axis=1)
        for s in range(0, len(gallery), NUMPY_CHUNK)
    ])
    top = np.argpartition(distances, k)[:k]
    return top[np.argsort(distances[top])] + 1


def build_index(gallery: np.ndarray, directory: Path, tier: str) -> tuple[Any, float]:
    from facetrail.index.ann import IndexPolicy
    from facetrail.index.faiss_index import FaissIndex
    from facetrail.store.base import Store

    n = len(gallery)
    policy = {
        "exact": IndexPolicy(exact_max_faces=n, memory_bytes=1 << 50),
        "sq8": IndexPolicy(exact_max_faces=0, memory_bytes=1 << 50, codes="sq8"),
        "pq": IndexPolicy(exact_max_faces=0, memory_bytes=1 << 50),
    }[tier]
    store = cast(Store, ArrayStore(gallery))
    started = time.perf_counter()
    index = FaissIndex(directory, store, model_info(MODEL), 1, policy)
    seconds = time.perf_counter() - started
    if index.tier != ("flat" if tier == "exact" else tier):
        raise SystemExit(f"{tier} index was not swapped in: {index.info().why}")
    return index, seconds


def recall(found: list[np.ndarray], truth: list[np.ndarray], k: int) -> float:
    return float(np.mean([len(np.intersect1d(f[:k], t[:k])) / k
                          for f, t in zip(found, truth, strict=True)]))


def batch_times(search: Callable[[np.ndarray], Any], queries: np.ndarray, batch: int,
                repeats: int) -> np.ndarray:
    ms = []
    for r in range(repeats + 1):
        start = (r * batch) % max(1, len(queries) - batch)
        chunk = np.ascontiguousarray(queries[start : start + batch])
        t0 = time.perf_counter_ns()
        search(chunk)
        if r:  # the first batch is a warm-up
            ms.append((time.perf_counter_ns() - t0) / 1e6)
    return np.array(ms)


def bench_size(size: int, real: np.ndarray, args: argparse.Namespace,
               rng: np.random.Generator) -> SizeResult:
    print(f"size {size:,}: generating ...", file=sys.stderr)
    gallery, queries = identity_gallery(real, size, args.photos, args.within, args.queries, rng)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-ann-", dir=args.tmp) as tmp:
        indexes = {}
        for tier in args.tiers:
            print(f"size {size:,}: building {tier} ...", file=sys.stderr)
            index, seconds = build_index(gallery, Path(tmp) / tier, tier)
            info = index.info()
            details = info.details
            indexes[tier] = index
            results[tier] = {
                "structure": details["structure"], "build_seconds": round(seconds, 2),
                "ram": info.memory_bytes / size, "disk": details["rerank_bytes"] / size,
                "tuning": (f"nprobe {details['nprobe']}, efSearch {details['ef_search']}, "
                           f"shortlist {details['shortlist_factor']}xk, built recall@10 "
                           f"{info.recall_at_10} (lower bound {details['recall_at_10_lower']})"
                           if "nprobe" in details else ""),
            }

        def single(index: Any) -> Callable[[int], np.ndarray]:
            return lambda q: index.search(queries[q : q + 1], K)[1][0]

        searches = {tier: single(indexes[tier]) for tier in args.tiers}
        for search in searches.values():
            for q in range(5):
                search(q)
        print(f"size {size:,}: timing ...", file=sys.stderr)
        busy, own, started = system_busy_seconds(), process_cpu_seconds(), time.perf_counter()
        ms, ids = timed_rounds(searches, len(queries), ROUNDS)
        numpy_n = len(queries) if size <= 1_000_000 else min(args.numpy_sample, len(queries))
        numpy_ms, numpy_ids = timed_rounds(
            {"numpy": lambda q: numpy_search(gallery, queries[q], K)}, numpy_n, 1)
        def batched(index: Any) -> Callable[[np.ndarray], Any]:
            return lambda b: index.search(b, K)

        batches = {tier: batch_times(batched(indexes[tier]), queries, args.batch,
                                     args.batch_repeats) for tier in args.tiers}
        wall = time.perf_counter() - started
        others = system_busy_seconds() - busy - (process_cpu_seconds() - own)
    truth = ids["exact"]
    exact50 = float(np.percentile(ms["exact"], 50))
    methods = []
    for tier in args.tiers:
        p50, p99 = np.percentile(ms[tier], [50, 99])
        b50, b99 = np.percentile(batches[tier], [50, 99])
        r = results[tier]
        methods.append(MethodResult(
            tier, r["structure"], r["build_seconds"], round(r["ram"], 1), round(r["disk"], 1),
            len(queries), round(float(p50), 3), round(float(p99), 3), round(float(b50), 2),
            round(float(b99), 2), round(exact50 / float(p50), 2),
            round(recall(ids[tier], truth, 1), 4), round(recall(ids[tier], truth, 10), 4),
            r["tuning"],
        ))
    p50, p99 = np.percentile(numpy_ms["numpy"], [50, 99])
    methods.append(MethodResult(
        "numpy", "float32 brute force", 0.0, 4 * gallery.shape[1], 0.0, numpy_n,
        round(float(p50), 3), round(float(p99), 3), float("nan"), float("nan"),
        round(exact50 / float(p50), 2),
        round(recall(numpy_ids["numpy"], truth[:numpy_n], 1), 4),
        round(recall(numpy_ids["numpy"], truth[:numpy_n], 10), 4), "",
    ))
    return SizeResult(size, round(max(0.0, others) / wall, 2), methods)


WIDTHS = (10, 7, 8, 10, 11, 7, 8, 8, 11, 8, 10, 8, 9)


def print_header(header: dict[str, Any]) -> None:
    print(json.dumps(header))
    columns = ("size", "method", "build s", "RAM B/face", "disk B/face", "queries", "p50 ms",
               "p99 ms", f"batch{header['batch']} p50", "p99", "exact/this",
               "recall@1", "recall@10")
    print("  ".join(f"{c:>{w}}" for c, w in zip(columns, WIDTHS, strict=True)), flush=True)


def print_size(r: SizeResult) -> None:
    """The rows of one size, printed as soon as it is measured."""
    for m in r.methods:
        cells = (f"{r.size:,}", m.method, f"{m.build_seconds:.1f}",
                 f"{m.ram_bytes_per_face:.1f}", f"{m.disk_bytes_per_face:.0f}",
                 str(m.queries), f"{m.p50_ms:.3f}", f"{m.p99_ms:.3f}",
                 f"{m.batch_p50_ms:.2f}", f"{m.batch_p99_ms:.2f}",
                 f"{m.exact_ratio_p50:.2f}x", f"{m.recall_at_1:.4f}", f"{m.recall_at_10:.4f}")
        print("  ".join(f"{c:>{w}}" for c, w in zip(cells, WIDTHS, strict=True)))
    for m in r.methods:
        if m.tuning:
            print(f"{'':>12}{m.method}: {m.structure}; {m.tuning}")
    print(f"{'':>12}other processes' load while timing: {r.other_processes_cores} cores",
          flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000,5000000",
                        help="comma-separated gallery sizes (default: %(default)s)")
    parser.add_argument("--tiers", default="exact,pq,sq8",
                        help="facetrail tiers to build; exact is always included "
                        "(default: %(default)s)")
    parser.add_argument("--queries", type=int, default=300,
                        help="single queries per size (default: %(default)s)")
    parser.add_argument("--numpy-sample", type=int, default=30,
                        help="queries NumPy runs above 1M faces (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32,
                        help="queries per batch (default: %(default)s)")
    parser.add_argument("--batch-repeats", type=int, default=20)
    parser.add_argument("--photos", type=int, default=4,
                        help="faces per synthetic person (default: %(default)s)")
    parser.add_argument("--within", type=float, default=0.5,
                        help="photo noise as a share of the real spread (default: %(default)s)")
    parser.add_argument("--holdout", type=int, default=50)
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--tmp", type=Path, default=None,
                        help="directory for the index files (default: the system's temp)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import faiss

    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    args.tiers = ["exact", *[t for t in args.tiers.split(",") if t.strip() and t != "exact"]]
    descriptors = load_descriptors(args.data.resolve(), MODEL)
    rng = np.random.default_rng(args.seed)
    real, _ = split(descriptors, args.holdout, rng)
    header = {
        "real_descriptors": len(real), "photos_per_person": args.photos,
        "within": args.within, "k": K, "batch": args.batch, "faiss": faiss.__version__,
        "numpy": np.__version__, "cpu_count": os.cpu_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
    }
    if not args.json:
        print_header(header)
    results = []
    for size in sizes:
        results.append(bench_size(size, real, args, rng))
        if not args.json:
            print_size(results[-1])
    if args.json:
        json.dump({**header, "results": [asdict(r) for r in results]}, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
