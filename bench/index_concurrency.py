"""Index concurrency and filtered search: facetrail's FAISS index searched by several threads
while another changes it, and searches limited to allowed faces.

Run from the repository root:

    .venv/bin/python bench/index_concurrency.py                         # 100k faces, ~5 min
    .venv/bin/python bench/index_concurrency.py --size 20000 --seconds 1  # a quick run
    .venv/bin/python bench/index_concurrency.py --tiers flat --json

The gallery is ``ann_search.identity_gallery`` (synthetic people with the real dlib
descriptors' mean and covariance, 4 photos each; queries are new photos of gallery people),
``--size`` faces as face ids 1..size, indexed by facetrail's ``FaissIndex`` in each of
``--tiers`` (``flat``: exact; ``pq``: forced above ``index_exact_max_faces``, a real
``optimize()`` with its recall tuning).

**Threads.** Single-query searches (k = 20, as ``facetrail search`` asks), in a loop on 1, 2
and 4 threads for ``--seconds``, in three conditions:

- ``idle``: nothing else touches the index;
- ``adding``: another thread keeps calling ``add()`` with ``--add-batch`` new faces, and
  ``remove()`` on the batch it added ``WINDOW`` batches before (so the gallery keeps its
  size); each call saves the index to disk, as ``add`` and ``remove`` promise;
- ``mutex``: idle, but every search holds one global lock, as the web server's lock did.

Printed per row: searches per second and its ratio to the 1-thread idle baseline measured in
the same run (alternating rounds, so slow spells of the machine hit every row), p50/p99/max
latency, and for ``adding`` the calls per second, how long the exclusive sections of ``add``
and ``remove`` lasted (``hold``) and how long the writer waited to enter them (``wait``). A
copy-on-write add of the flat tier would copy the whole index: its cost
(``faiss.clone_index``) is printed too.

**Filters.** ``search(..., allowed=...)`` with allowed = a seeded random 50 %, 10 %, 5 %, 2 %
and 1 % of the gallery, single-threaded, against the unfiltered search (p50 ratio, measured in
the same rounds), with recall@10 against brute force over the allowed vectors; on an
approximate tier also the paths facetrail did not take for that share (exact among the
allowed faces; IVF with a widened or with the tuned nprobe). And, on the raw
FAISS flat index, the two ID selectors: a hash set (``IDSelectorBatch``) and a bitmap
(``IDSelectorBitmap``, what facetrail uses), build and search time.

The machine is shared: the load other processes put on it while measuring is printed; compare
ratios, not seconds (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from _gallery import DEFAULT_DATA, load_descriptors
from _machine import code_state, system_busy_seconds
from ann_search import build_index, identity_gallery
from search_latency import process_cpu_seconds, split, timed_rounds

K = 20
WINDOW = 8
"""Batches the adding thread keeps in the index before removing the oldest."""
THREADS = (1, 2, 4)
SHARES = (0.5, 0.1, 0.05, 0.02, 0.01)
REPO = str(Path(__file__).resolve().parent.parent)


# -- threads -------------------------------------------------------------------------------------
class TimedLock:
    """Wraps the index's readers-writer lock to time its exclusive sections, by the call
    (``op``) they belong to."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.op = ""
        self.waits: list[float] = []
        self.holds: list[tuple[str, float]] = []

    def shared(self) -> Any:
        return self.lock.shared()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        t0 = time.perf_counter()
        with self.lock.exclusive():
            t1 = time.perf_counter()
            try:
                yield
            finally:
                self.holds.append((self.op, time.perf_counter() - t1))
                self.waits.append(t1 - t0)


@dataclass
class Run:
    searches: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    writes: int = 0
    holds: list[tuple[str, float]] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)


def run_threads(index: Any, queries: np.ndarray, threads: int, mode: str, seconds: float,
                pool: tuple[np.ndarray, np.ndarray], batch: int) -> Run:
    stop = threading.Event()
    mutex = threading.Lock()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    counts = [0] * threads
    writes = [0]

    def reader(t: int) -> None:
        q = t * 7919
        while not stop.is_set():
            query = queries[q % len(queries)][None, :]
            t0 = time.perf_counter()
            if mode == "mutex":
                with mutex:
                    index.search(query, K)
            else:
                index.search(query, K)
            latencies[t].append(time.perf_counter() - t0)
            counts[t] += 1
            q += 1

    pool_ids, pool_vectors = pool
    batches = len(pool_ids) // batch

    timed = TimedLock(index._lock)

    def writer() -> None:
        j = 0
        while not stop.is_set():
            part = slice((j % batches) * batch, (j % batches + 1) * batch)
            timed.op = "add"
            index.add(pool_ids[part], pool_vectors[part])
            writes[0] += 1
            if j >= WINDOW:
                old = (j - WINDOW) % batches
                timed.op = "remove"
                index.remove(pool_ids[old * batch : (old + 1) * batch])
                writes[0] += 1
            j += 1

    index._lock = timed
    workers = [threading.Thread(target=reader, args=(t,)) for t in range(threads)]
    if mode == "adding":
        workers.append(threading.Thread(target=writer))
    started = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    wall = time.perf_counter() - started
    index._lock = timed.lock
    index.remove(pool_ids)  # back to the gallery alone
    return Run(sum(counts), wall, [x for lat in latencies for x in lat], writes[0],
               timed.holds, timed.waits)


@dataclass
class ThreadRow:
    tier: str
    mode: str
    threads: int
    searches_per_s: float
    ratio: float
    """searches per second / the 1-thread idle baseline's, same run."""
    p50_ms: float
    p99_ms: float
    max_ms: float
    writes_per_s: float
    """add() and remove() calls per second of the adding thread."""
    add_hold_p50_ms: float
    remove_hold_p50_ms: float
    hold_max_ms: float
    wait_p50_ms: float
    wait_max_ms: float


def bench_threads(tier: str, index: Any, queries: np.ndarray, pool: tuple[np.ndarray, np.ndarray],
                  args: argparse.Namespace) -> list[ThreadRow]:
    configs = [(mode, t) for t in THREADS for mode in ("idle", "adding")]
    configs += [("mutex", t) for t in THREADS if t > 1]
    runs: dict[tuple[str, int], list[Run]] = {c: [] for c in configs}
    for r in range(args.rounds):
        for mode, t in configs if r % 2 == 0 else configs[::-1]:
            print(f"  {tier}: round {r + 1}, {mode}, {t} thread(s) ...", file=sys.stderr)
            runs[(mode, t)].append(run_threads(index, queries, t, mode, args.seconds, pool,
                                               args.add_batch))
    rate = {c: sum(x.searches for x in rs) / sum(x.seconds for x in rs) for c, rs in runs.items()}
    base = rate[("idle", 1)]
    rows = []
    for (mode, t), rs in runs.items():
        lat = np.array([x for run in rs for x in run.latencies]) * 1e3
        holds = {op: np.array([x for run in rs for o, x in run.holds if o == op] or [0.0]) * 1e3
                 for op in ("add", "remove")}
        waits = np.array([x for run in rs for x in run.waits] or [0.0]) * 1e3
        p50, p99 = np.percentile(lat, [50, 99])
        rows.append(ThreadRow(
            tier, mode, t, round(rate[(mode, t)], 1), round(rate[(mode, t)] / base, 2),
            round(float(p50), 3), round(float(p99), 3), round(float(lat.max()), 2),
            round(sum(x.writes for x in rs) / sum(x.seconds for x in rs), 1),
            round(float(np.percentile(holds["add"], 50)), 3),
            round(float(np.percentile(holds["remove"], 50)), 3),
            round(float(max(h.max() for h in holds.values())), 2),
            round(float(np.percentile(waits, 50)), 3), round(float(waits.max()), 2),
        ))
    return rows


# -- filters -------------------------------------------------------------------------------------
@dataclass
class FilterRow:
    tier: str
    share: float
    allowed: int
    path: str
    p50_ms: float
    unfiltered_p50_ms: float
    cost: float
    """filtered p50 / unfiltered p50, same rounds."""
    recall_at_10: float
    """against brute force over the allowed vectors."""


def brute_force(gallery: np.ndarray, allowed: np.ndarray, queries: np.ndarray,
                k: int) -> list[np.ndarray]:
    vectors = gallery[allowed - 1]
    out = []
    for q in queries:
        d = np.linalg.norm(vectors - q, axis=1)
        top = np.argpartition(d, k)[:k] if len(d) > k else np.arange(len(d))
        out.append(allowed[top[np.argsort(d[top])]])
    return out


def bench_filters(tier: str, index: Any, gallery: np.ndarray, queries: np.ndarray,
                  rng: np.random.Generator, args: argparse.Namespace) -> list[FilterRow]:
    """Filtered searches as facetrail runs them; on an approximate tier also the other paths
    it could have taken: exact among the allowed faces, IVF with the nprobe widened
    (``ann.filtered_tuning``) and IVF with the nprobe tuned for unfiltered searches."""
    from facetrail.index import ann, faiss_index

    n = len(gallery)
    ids = np.arange(1, n + 1, dtype=np.int64)
    alloweds = {s: np.sort(rng.choice(ids, max(1, int(n * s)), replace=False)) for s in SHARES}
    exact_share, widen = faiss_index.EXACT_FILTER_SHARE, ann.filtered_tuning

    def unchanged(tuning: Any, share: float, nlist: int) -> Any:
        return tuning

    def path_of(allowed: np.ndarray) -> str:
        exact_limit = min(faiss_index.EXACT_FILTER_MAX, exact_share * n)
        if tier == "flat":
            return "bitmap scan"
        if len(allowed) <= exact_limit:
            return "exact among allowed"
        return "IVF + bitmap" + (", nprobe widened" if len(allowed) < ann.WIDEN_BELOW * n
                                 else "")

    paths = {"facetrail": (exact_share, widen)}
    if tier != "flat":
        paths |= {"IVF + bitmap, nprobe widened": (0.0, widen),
                  "IVF + bitmap, tuned nprobe": (0.0, unchanged),
                  "exact among allowed": (1.0, widen)}

    def filtered(allowed: np.ndarray | None, path: str) -> Callable[[int], np.ndarray]:
        share, tuning = paths[path]

        def search(q: int) -> np.ndarray:
            faiss_index.EXACT_FILTER_SHARE, ann.filtered_tuning = share, tuning
            return index.search(queries[q : q + 1], K, allowed)[1][0]
        return search

    searches = {"none|facetrail": filtered(None, "facetrail")}
    for s, allowed in alloweds.items():
        for path in paths:
            if path == "exact among allowed" and len(allowed) > faiss_index.EXACT_FILTER_MAX:
                continue
            if path == "IVF + bitmap, nprobe widened" and s >= ann.WIDEN_BELOW:
                continue  # the same search as with the tuned nprobe
            if path == "facetrail" or path != path_of(allowed):
                searches[f"{s}|{path}"] = filtered(allowed, path)
    try:
        ms, found = timed_rounds(searches, len(queries), args.rounds * 2)
    finally:
        faiss_index.EXACT_FILTER_SHARE, ann.filtered_tuning = exact_share, widen
    base = float(np.percentile(ms["none|facetrail"], 50))
    truth = brute_force(gallery, ids, queries, 10)
    recall = np.mean([len(np.intersect1d(f[:10], t)) / 10
                      for f, t in zip(found["none|facetrail"], truth, strict=True)])
    rows = [FilterRow(tier, 1.0, n, "unfiltered", round(base, 3), round(base, 3), 1.0,
                      round(float(recall), 4))]
    for s, allowed in alloweds.items():
        truth = brute_force(gallery, allowed, queries, 10)
        for key, times in ms.items():
            share, path = key.split("|")
            if share != str(s):
                continue
            recall = np.mean([len(np.intersect1d(f[:10], t)) / 10
                              for f, t in zip(found[key], truth, strict=True)])
            p50 = float(np.percentile(times, 50))
            name = f"{path_of(allowed)} (facetrail)" if path == "facetrail" else path
            rows.append(FilterRow(tier, s, len(allowed), name, round(p50, 3), round(base, 3),
                                  round(p50 / base, 2), round(float(recall), 4)))
    return rows


@dataclass
class SelectorRow:
    share: float
    batch_build_ms: float
    bitmap_build_ms: float
    batch_search_ms: float
    bitmap_search_ms: float
    """Each: build the selector + one single-query search, p50 (flat index, one thread)."""


def bench_selectors(index: Any, queries: np.ndarray, rng: np.random.Generator) -> list[SelectorRow]:
    import faiss

    from facetrail.index import ann

    raw = index._index
    n = int(raw.ntotal)
    rows = []
    with ann.one_thread(faiss):
        for share in SHARES:
            allowed = np.sort(rng.choice(np.arange(1, n + 1), max(1, int(n * share)),
                                         replace=False))
            makers = {"batch": lambda a=allowed: faiss.IDSelectorBatch(a),
                      "bitmap": lambda a=allowed: ann.allowed_selector(a, faiss)}
            build: dict[str, list[float]] = {m: [] for m in makers}
            total: dict[str, list[float]] = {m: [] for m in makers}
            for q in range(min(60, len(queries))):
                for name, make in makers.items() if q % 2 else list(makers.items())[::-1]:
                    t0 = time.perf_counter()
                    selector = make()
                    t1 = time.perf_counter()
                    params = faiss.SearchParameters()
                    params.sel = selector
                    raw.search(queries[q : q + 1], K, params=params)
                    t2 = time.perf_counter()
                    build[name].append((t1 - t0) * 1e3)
                    total[name].append((t2 - t0) * 1e3)
            rows.append(SelectorRow(share, *(round(float(np.median(v)), 3) for v in (
                build["batch"], build["bitmap"], total["batch"], total["bitmap"]))))
    return rows


def clone_ms(index: Any) -> float:
    import faiss

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        faiss.clone_index(index._index)
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1e3, 2)


# -- main ----------------------------------------------------------------------------------------
def print_rows(title: str, rows: list[Any]) -> None:
    if not rows:
        return
    print(f"\n{title}")
    names = list(asdict(rows[0]))
    widths = [max(len(n), *(len(str(getattr(r, n))) for r in rows)) for n in names]
    print("  ".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True)))
    for r in rows:
        print("  ".join(f"{getattr(r, n)!s:>{w}}" for n, w in zip(names, widths, strict=True)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="faces (default: %(default)s)")
    parser.add_argument("--tiers", default="flat,pq", help="default: %(default)s")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="seconds per thread measurement (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="default: %(default)s")
    parser.add_argument("--add-batch", type=int, default=32,
                        help="faces per add() of the adding thread (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=300, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--tmp", type=Path, default=None,
                        help="directory for the index files (default: the system's temp)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import faiss

    rng = np.random.default_rng(args.seed)
    real, _ = split(load_descriptors(args.data.resolve(), "dlib"), 50, rng)
    pool_size = args.add_batch * 64
    everything, queries = identity_gallery(real, args.size + pool_size, 4, 0.5, args.queries,
                                           rng)
    gallery = everything[: args.size]
    pool = (np.arange(args.size + 1, args.size + pool_size + 1, dtype=np.int64),
            everything[args.size :])
    header = {"size": args.size, "k": K, "add_batch": args.add_batch, "seconds": args.seconds,
              "rounds": args.rounds, "faiss": faiss.__version__, "numpy": np.__version__,
              "cpu_count": os.cpu_count(), **code_state(REPO)}
    threads: list[ThreadRow] = []
    filters: list[FilterRow] = []
    selectors: list[SelectorRow] = []
    clones: dict[str, float] = {}
    busy, own, started = system_busy_seconds(), process_cpu_seconds(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-conc-", dir=args.tmp) as tmp:
        for tier in [t.strip() for t in args.tiers.split(",") if t.strip()]:
            print(f"{tier}: building over {args.size:,} faces ...", file=sys.stderr)
            index, _ = build_index(gallery, Path(tmp) / tier, "exact" if tier == "flat" else tier)
            header[f"{tier}_structure"] = index.info().details["structure"]
            info = index.info()
            header[f"{tier}_tuning"] = {k: v for k, v in info.details.items()
                                        if k in ("nprobe", "ef_search", "shortlist_factor",
                                                 "recall_at_10_lower")}
            threads += bench_threads(tier, index, queries, pool, args)
            print(f"{tier}: filters ...", file=sys.stderr)
            filters += bench_filters(tier, index, gallery, queries, rng, args)
            if tier == "flat":
                selectors = bench_selectors(index, queries, rng)
                clones[tier] = clone_ms(index)
            index.close()
    wall = time.perf_counter() - started
    others = system_busy_seconds() - busy - (process_cpu_seconds() - own)
    header["other_processes_cores"] = round(max(0.0, others) / wall, 2)
    header["copy_on_write_clone_ms"] = clones
    if args.json:
        json.dump({**header, "threads": [asdict(r) for r in threads],
                   "filters": [asdict(r) for r in filters],
                   "selectors": [asdict(r) for r in selectors]}, sys.stdout, indent=2)
        print()
        return
    print(json.dumps(header))
    print_rows("threads: single-query searches, k = 20 (ratio: to 1 thread idle)", threads)
    print_rows("filters: one thread, k = 20 (cost: filtered p50 / unfiltered p50)", filters)
    print_rows("ID selectors on the flat index (ms, p50, one thread)", selectors)


if __name__ == "__main__":
    main()
