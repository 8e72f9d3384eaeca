"""Who writes ingest's results to PostgreSQL: the driver, or the workers themselves
(``FACETRAIL_INGEST_WRITES``), measured two ways.

Run from the repository root (the ray extra installed; it starts a throwaway PostgreSQL with
scripts/postgres-local.sh unless ``--store-url`` names a server, and stops it at the end):

    .venv/bin/python bench/ingest_writes.py
    .venv/bin/python bench/ingest_writes.py --copies 3 --writers 1,2,4 --json

1. **Commit ceiling.** What one process can commit, and what several commit at once: each of
   ``--writers`` processes stores ``--images`` synthetic analysed images (``--faces`` faces of
   128 float32 each, with an appearance) through ``Store.add_image``, one transaction each,
   as the driver (one writer) or the workers (several) do. Reported: images/s in all, and the
   ratio to one writer. The driver's ceiling is the one-writer rate: an ingest whose workers
   analyse faster than that waits for the driver.
2. **End to end.** ``--copies`` re-encoded variants of each fixture photo
   (bench/ray_ingest.py's ``generate``: new bytes, each analysed) ingested into a new
   database by the local executor and by Ray, with driver writes and with worker writes:
   seconds and images/s, and the ratio to driver writes on the same executor.

Ratios are within one command: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from _machine import code_state
from ray_ingest import generate

REPO = Path(__file__).resolve().parent.parent


def _commit(url: str, source_id: int, run_id: int, model_id: int, n: int, faces: int,
            go: Any, out: Any) -> None:
    from facetrail.records import DetectedFace, ImageAnalysis, Provenance
    from facetrail.store import open_store

    store = open_store(url)
    rng = np.random.default_rng()
    analyses = []
    for _ in range(n):
        sha = uuid.uuid4().hex * 2
        detected = tuple(DetectedFace(
            box=(10 * k, 10, 80, 80), landmarks=((1.0, 2.0),) * 5, det_score=0.9, quality=1.0,
            sharpness=120.0, embedding=rng.standard_normal(128).astype(np.float32),
            runtime="onnx") for k in range(faces))
        analyses.append(ImageAnalysis(sha, 640, 480, "JPEG", detected))
    go.wait(60)
    started = time.perf_counter()
    for analysis in analyses:
        store.add_image(analysis, 50_000, model_id, "bench", source_id, run_id,
                        [(Provenance(f"/bench/{analysis.sha256}.jpg"), "f")])
    out.put(time.perf_counter() - started)
    store.close()


def commit_ceiling(url: str, writers: list[int], images: int, faces: int) -> dict[str, Any]:
    from facetrail.faces.base import ModelInfo
    from facetrail.store import RunCounts, open_store
    from facetrail.store.base import SourceSpec

    store = open_store(url)
    source = store.add_source(SourceSpec(f"bench-{uuid.uuid4().hex[:6]}", "folder", "/bench",
                                         "benchmark", "benchmark", 1), "bench")
    model_id = store.model_id(ModelInfo("bench", "0" * 16, 128, "none", "unit", "cosine",
                                        "det@1"))
    rows: dict[str, Any] = {}
    for n in writers:
        run_id = store.start_run(source.id, ["/bench"], "bench", f"bench:{n}",
                                 "2000-01-01T00:00:00Z")
        context = multiprocessing.get_context("spawn")
        go, out = context.Event(), context.Queue()
        procs = [context.Process(target=_commit, args=(url, source.id, run_id, model_id,
                                                       images // n, faces, go, out))
                 for _ in range(n)]
        for proc in procs:
            proc.start()
        time.sleep(3)  # every writer has connected and made its images
        started = time.perf_counter()
        go.set()
        for proc in procs:
            proc.join()
        wall = time.perf_counter() - started
        store.finish_run(run_id, "completed", RunCounts())
        rows[str(n)] = {"images": images // n * n, "seconds": round(wall, 2),
                        "images_per_s": round(images // n * n / wall, 1)}
    base = rows[str(writers[0])]["images_per_s"]
    for row in rows.values():
        row["vs_first"] = round(row["images_per_s"] / base, 2)
    store.close()
    return rows


def end_to_end(url_for: Any, folder: Path, executor: str, writes: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    env.update({"FACETRAIL_STORE_URL": url_for(), "FACETRAIL_EXECUTOR": executor,
                "FACETRAIL_INGEST_WRITES": writes, "FACETRAIL_WORKERS": "2"})
    with tempfile.TemporaryDirectory(prefix="ft-bench-") as tmp:
        home = Path(tmp) / "home"
        cli = [sys.executable, "-m", "facetrail", "--home", str(home)]
        subprocess.run([*cli, "sources", "add", "s", "--kind", "folder", "--uri", str(folder),
                        "--lawful-basis", "benchmark", "--purpose", "benchmark",
                        "--retention-days", "1"], env=env, check=True, capture_output=True)
        started = time.perf_counter()
        out = subprocess.run([*cli, "ingest", "s", "--json"], env=env, check=True,
                             capture_output=True, text=True)
        seconds = time.perf_counter() - started
    report = json.loads(out.stdout)
    return {"seconds": round(seconds, 2), "images": report["images_new"],
            "images_per_s": round(report["images_new"] / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store-url", default=None, help="a PostgreSQL server's database "
                        "(default: a throwaway cluster started and stopped here)")
    parser.add_argument("--writers", default="1,2,4")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--faces", type=int, default=3)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--executors", default="local,ray")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    results: dict[str, Any] = {"code": code_state(str(REPO)), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="ft-bench-pg-") as tmp:
        url = args.store_url
        if url is None:
            url = subprocess.run(["bash", str(REPO / "scripts/postgres-local.sh"), "start",
                                  f"{tmp}/pg"], check=True, capture_output=True,
                                 text=True).stdout.strip().splitlines()[-1]
        try:
            os.environ["TEST_POSTGRES_URL"] = url
            from stores import new_database

            writers = [int(w) for w in args.writers.split(",")]
            results["commit_ceiling"] = commit_ceiling(new_database(), writers, args.images,
                                                       args.faces)
            if not args.json:
                print("commit ceiling:", json.dumps(results["commit_ceiling"]), flush=True)
            generated = Path(tmp) / "generated"
            made = generate(generated, args.copies)
            results["photos"] = made
            runs: dict[str, Any] = {}
            for executor in filter(None, args.executors.split(",")):
                for writes in ("driver", "workers"):
                    run = end_to_end(new_database, generated, executor, writes)
                    runs[f"{executor}/{writes}"] = run
                    if not args.json:
                        print(f"{executor:>6} {writes:>8}: {run}", flush=True)
                base = runs[f"{executor}/driver"]["images_per_s"]
                for writes in ("driver", "workers"):
                    run = runs[f"{executor}/{writes}"]
                    run["vs_driver"] = round(run["images_per_s"] / base, 2)
            results["end_to_end"] = runs
        finally:
            if args.store_url is None:
                subprocess.run(["bash", str(REPO / "scripts/postgres-local.sh"), "stop",
                                f"{tmp}/pg"], check=False, capture_output=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
