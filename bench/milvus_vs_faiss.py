"""Milvus against FAISS: facetrail's two index back ends on the same generated galleries.

Run from the repository root (it starts a Milvus server on loopback with
scripts/milvus-local.sh unless ``--uri`` names one, and stops it at the end):

    .venv/bin/python bench/milvus_vs_faiss.py                     # 200k faces
    .venv/bin/python bench/milvus_vs_faiss.py --sizes 200000,1000000

For each size, one gallery and its queries (``ann_search.identity_gallery``: real dlib
descriptors, then synthetic people with their mean and covariance, 4 photos each; a query is a
new photo of a person in the gallery) go to

- ``faiss-exact``: ``FaissIndex`` in its flat tier (the baseline of the ratios);
- ``faiss-pq``: ``FaissIndex`` in its default approximate tier (IVF + PQ fast scan + exact
  re-rank, tuned to the 0.99 recall floor at build);
- ``milvus-hnsw``: ``MilvusIndex`` forced to HNSW (``exact_max_faces=0``), tuned to the same
  floor at build, through the loopback relay of scripts/milvus-local.sh.

Reported: build seconds (from the store to a searchable index, the recall measurement
included); p50 and p99 of single queries (k = 20, as ``facetrail search`` asks), and their
ratio to exact FAISS in the same run; recall@10 against exact search, overall and on the
query's mates (gallery faces of the same synthetic person, all within the search threshold);
the same under an organisation filter (``allowed`` = a random ``--filter-shares`` of the
faces); RAM: FAISS's index structures, and the Milvus server's resident memory (VmRSS) after
the build less before it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gallery import DEFAULT_DATA, REPO, load_descriptors, model_info  # noqa: E402
from ann_search import identity_gallery  # noqa: E402
from search_latency import ArrayStore  # noqa: E402

MODEL = "dlib"
K = 20


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def exact(gallery: np.ndarray, queries: np.ndarray, k: int,
          allowed: np.ndarray | None = None) -> np.ndarray:
    """True top-k face ids (rows + 1), among ``allowed`` ids if given."""
    import faiss

    rows = gallery if allowed is None else gallery[allowed - 1]
    _, i = faiss.knn(queries, np.ascontiguousarray(rows), k)
    return (i + 1) if allowed is None else allowed[i]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, t)) / len(t)
                          for f, t in zip(found, truth, strict=True)]))


def timed(index: Any, queries: np.ndarray, allowed: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """(milliseconds of each single query, found ids (n, K))."""
    index.search(queries[:1], K, allowed)  # warm-up
    ms, found = [], []
    for q in queries:
        t0 = time.perf_counter_ns()
        _, ids = index.search(q[None, :], K, allowed)
        ms.append((time.perf_counter_ns() - t0) / 1e6)
        found.append(ids[0])
    return np.array(ms), np.stack(found)


def bench_size(size: int, real: np.ndarray, args: argparse.Namespace, uri: str,
               milvus_pid: int | None, tmp: Path) -> dict[str, Any]:
    from facetrail.index.ann import IndexPolicy
    from facetrail.index.faiss_index import FaissIndex
    from facetrail.index.milvus_index import MilvusIndex
    from facetrail.store.base import Store

    rng = np.random.default_rng(args.seed)
    gallery, queries = identity_gallery(real, size, 4, 0.5, args.queries, rng)
    store = cast(Store, ArrayStore(gallery))
    model = model_info(MODEL)
    truth = exact(gallery, queries, 10)
    # The query's mates: faces of the same synthetic person (rows of its 4 photos).
    first = len(real)
    mates = [np.arange(first + 4 * p, first + 4 * p + 4) + 1 for p in range(len(queries))]
    filters = {share: np.sort(rng.choice(np.arange(1, size + 1), int(share * size),
                                         replace=False))
               for share in args.filter_shares}
    filter_truth = {share: exact(gallery, queries, 10, ids) for share, ids in filters.items()}
    result: dict[str, Any] = {"size": size, "methods": []}
    baseline_p50 = None
    for method in args.methods:
        started = time.perf_counter()
        rss_before = rss_bytes(milvus_pid) if milvus_pid else 0
        if method == "faiss-exact":
            index: Any = FaissIndex(tmp / f"exact-{size}", store, model, 1,
                                    IndexPolicy(exact_max_faces=size, memory_bytes=1 << 50))
        elif method == "faiss-pq":
            index = FaissIndex(tmp / f"pq-{size}", store, model, 1,
                               IndexPolicy(exact_max_faces=0, memory_bytes=1 << 50))
        else:
            index = MilvusIndex(tmp / f"milvus-{size}", store, model, 1, uri,
                                prefix=f"bench_{uuid.uuid4().hex[:8]}",
                                policy=IndexPolicy(exact_max_faces=0))
        build = time.perf_counter() - started
        info = index.info()
        ms, found = timed(index, queries)
        row: dict[str, Any] = {
            "method": method, "kind": info.kind, "build_s": round(build, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "recall_at_10": round(recall(found[:, :10], truth), 4),
            "mates_recall": round(float(np.mean([np.isin(m, f).mean()
                                                  for m, f in zip(mates, found, strict=True)])),
                                  4),
            "build_recall_at_10": info.recall_at_10,
            "tuning": {k: v for k, v in info.details.items()
                       if k in ("nprobe", "ef_search", "shortlist_factor", "ef", "M")},
        }
        if method == "faiss-exact":
            baseline_p50 = row["p50_ms"]
        row["exact_ratio_p50"] = round(baseline_p50 / row["p50_ms"], 3) if baseline_p50 else None
        for share, ids in filters.items():
            fms, ffound = timed(index, queries, ids)
            row[f"filter_{share}"] = {
                "p50_ms": round(float(np.percentile(fms, 50)), 2),
                "p99_ms": round(float(np.percentile(fms, 99)), 2),
                "recall_at_10": round(recall(ffound[:, :10], filter_truth[share]), 4),
                "only_allowed": bool(np.all(np.isin(ffound[ffound >= 0], ids))),
            }
        if method.startswith("milvus") and milvus_pid:
            rss_after = rss_bytes(milvus_pid)
            row["server_rss_mb"] = round(rss_after / 2**20)
            row["ram_bytes_per_face"] = round((rss_after - rss_before) / size)
        else:
            row["ram_bytes_per_face"] = round(info.memory_bytes / size)
        index.close()
        result["methods"].append(row)
        print(json.dumps(row), file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200000")
    parser.add_argument("--methods", default="faiss-exact,faiss-pq,milvus-hnsw")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--filter-shares", default="0.1,0.01")
    parser.add_argument("--uri", default=None, help="a running Milvus server (default: start "
                        "one with scripts/milvus-local.sh)")
    parser.add_argument("--milvus-pid", type=int, default=None,
                        help="its process id, for its RSS (known when started here)")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    args.methods = args.methods.split(",")
    args.filter_shares = [float(s) for s in args.filter_shares.split(",") if s]
    real = load_descriptors(args.data, MODEL)
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-") as tmp_name:
        tmp = Path(tmp_name)
        script = REPO / "scripts" / "milvus-local.sh"
        uri, pid = args.uri, args.milvus_pid
        if uri is None:
            uri = subprocess.run(["bash", str(script), "start", str(tmp / "milvus")],
                                 check=True, capture_output=True, text=True).stdout.strip()
            pid = int((tmp / "milvus" / "milvus.pid").read_text())
        try:
            results = [bench_size(int(s), real, args, uri, pid, tmp)
                       for s in args.sizes.split(",")]
        finally:
            if args.uri is None:
                subprocess.run(["bash", str(script), "stop", str(tmp / "milvus")], check=False)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
