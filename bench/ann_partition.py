"""ANN partition: recall and latency of the ``pq`` tier for several IVF list counts.

Run from the repository root:

    .venv/bin/python bench/ann_partition.py                       # 1M faces, 1,024 and 2,048 lists
    .venv/bin/python bench/ann_partition.py --size 100000 --lists 256,512

The gallery and the queries are those of ``bench/ann_search.py`` (same generator, same seed).
For each list count one ``pq`` index is built (``ann.build``, as ``optimize()`` does), then for
each nprobe (efSearch 2 x nprobe, shortlist ``--factor`` x k):

- recall@10 against exact search (mean, and the lower confidence bound tuning compares with
  the floor) and recall@1, on two query sets: ``fresh``, the benchmark's new photos of gallery
  people, and ``build``, the queries ``tune`` measures on (stored faces plus noise);
- p50 of single queries (k = 20, one thread), every setting timed in the same rounds so that
  machine noise falls on all of them alike.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _gallery import DEFAULT_DATA, load_descriptors
from ann_search import MODEL, K, identity_gallery
from search_latency import Search, split, timed_rounds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--lists", default="1024,2048")
    parser.add_argument("--probes", default="256,384,512,768")
    parser.add_argument("--factor", type=int, default=32, help="shortlist, as a multiple of k")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)

    import faiss

    from facetrail.index import ann
    from facetrail.index.vectorfile import VectorFile

    rng = np.random.default_rng(args.seed)
    real, _ = split(load_descriptors(args.data.resolve(), MODEL), 50, rng)
    gallery, fresh = identity_gallery(real, args.size, 4, 0.5, args.queries, rng)
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-partition-") as tmp:
        vectors = VectorFile(Path(tmp) / "g", gallery.shape[1])
        vectors.create()
        vectors.append(np.arange(1, args.size + 1, dtype=np.int64), gallery)
        query_sets = {"fresh": fresh, "build": ann.recall_queries(vectors, args.queries)}
        truth = {name: ann.exact_ids(q, vectors, ann.RECALL_K, faiss)
                 for name, q in query_sets.items()}
        searches: dict[str, Search] = {}
        rows = []

        def single(index: Any, tuning: ann.Tuning) -> Search:
            """One query of the fresh photos, by number, through ``index`` tuned so."""
            return lambda q: ann.search(index, vectors, fresh[q : q + 1], K, tuning, faiss)[1][0]

        for nlist in (int(x) for x in args.lists.split(",")):
            started = time.perf_counter()
            index = ann.build("pq", vectors, faiss, nlist=nlist)
            print(f"{nlist} lists built in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)
            for nprobe in (int(x) for x in args.probes.split(",")):
                if nprobe > nlist:
                    continue
                tuning = ann.Tuning(nprobe, 2 * nprobe, args.factor)
                cells = []
                for name, queries in query_sets.items():
                    _, found = ann.search(index, vectors, queries, ann.RECALL_K, tuning, faiss)
                    m = ann.measure(tuning, found, truth[name])
                    top1 = float(np.mean(found[:, 0] == truth[name][:, 0]))
                    cells.append(f"{m.recall:.4f} {m.lower:.4f} {top1:.3f}")
                rows.append((nlist, nprobe, cells))
                searches[f"{nlist}/{nprobe}"] = single(index, tuning)
        print(f"size {args.size:,}, shortlist {args.factor} x k, {args.queries} queries; "
              "recall@10, its lower bound, recall@1", file=sys.stderr)
        with ann.one_thread(faiss):
            ms, _ = timed_rounds(searches, len(fresh), args.rounds)
    print(f"{'lists':>6} {'nprobe':>6} {'fresh photos':>22} {'build-time queries':>22} "
          f"{'p50 ms':>7}")
    for nlist, nprobe, cells in rows:
        p50 = float(np.percentile(ms[f"{nlist}/{nprobe}"], 50))
        print(f"{nlist:>6} {nprobe:>6} {cells[0]:>22} {cells[1]:>22} {p50:>7.2f}")


if __name__ == "__main__":
    main()
