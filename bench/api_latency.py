"""Search API latency and throughput over HTTP, next to in-process search, on >= 100k faces.

Run from the repository root:

    .venv/bin/python bench/api_latency.py
    .venv/bin/python bench/api_latency.py --faces 100000 --clients 1,4,16 --requests 64 --json

What is timed, all in one command on one gallery:

- **in-process**: ``Facetrail.search(probe_bytes, ...)``, the public API the CLI calls: decode,
  detect, embed, FAISS search, audit event. One query at a time.
- **HTTP**: ``POST /api/searches`` (JSON: probe sha256, face 0, case, purpose) against
  ``facetrail serve`` in a child process, with 1, 4 and 16 concurrent clients (threads, one
  keep-alive connection each). The server reads the stored probe, runs the same search, and
  also keeps the search as a record. Probes are uploaded once beforehand (``POST
  /api/probes``), as the web app does, and are not timed.

The gallery: real descriptors of the new home's face model (yunet-sface by default;
``_gallery.load_descriptors``, cached in ``bench/results/``) tiled to ``--faces`` with
Gaussian noise (unit length again for a cosine model), inserted through the store
(``_gallery.fill_store``, ``--per-image`` faces per synthetic image), then indexed by the
server as it starts. Probes are real photos from ``tests/data/faces/people``. The server serialises
searches (one model, one index), so throughput with more clients shows queueing, not
parallelism; p99 grows with the queue.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from _gallery import DEFAULT_DATA, fill_store, load_descriptors, noisy_tiles
from _machine import system_busy_seconds

REPO = Path(__file__).resolve().parent.parent
PROBES = REPO / "tests" / "data" / "faces" / "people"
CASE = {"case_ref": "BENCH-1", "purpose": "search latency benchmark"}
"""The case fields of every search (the JSON body of the HTTP requests)."""


def build_gallery(home: Path, faces: int, per_image: int, sigma: float, data: Path,
                  rng: np.random.Generator) -> tuple[str, str]:
    """A gallery of ``faces`` in a new home, in its face model's own space (real descriptors
    of ``data`` tiled with noise, written through the store); returns (analyst token, model)."""
    import facetrail

    with facetrail.open(home, workers=1) as engine:
        model = engine.model_name
        base = load_descriptors(data, model)
        vectors = noisy_tiles(base, faces, sigma, rng, unit=engine.model.metric == "cosine")
        fill_store(engine, vectors, per_image, data)
        token = engine.add_user("bench-analyst", "analyst", actor="bench")[1]
        size = engine.index.size  # built here, saved on close: the server opens it warm
    assert size == len(vectors), (size, len(vectors))
    return token, model


def probe_photos(count: int) -> list[bytes]:
    return [p.read_bytes() for p in sorted(PROBES.glob("*/*.jpg"))[::7][:count]]


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.array(ms)
    return {"n": len(ms), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1),
            "mean_ms": round(float(a.mean()), 1)}


def in_process(home: Path, photos: list[bytes], requests: int) -> dict[str, Any]:
    import facetrail

    with facetrail.open(home) as engine:
        for data in photos[:2]:
            engine.search(data, actor="bench", case_ref=CASE["case_ref"],
                          purpose=CASE["purpose"])  # load the models
        times = []
        started = time.perf_counter()
        for i in range(requests):
            t = time.perf_counter()
            engine.search(photos[i % len(photos)], actor="bench", case_ref=CASE["case_ref"],
                          purpose=CASE["purpose"])
            times.append((time.perf_counter() - t) * 1000)
        wall = time.perf_counter() - started
    return {**percentiles(times), "per_s": round(requests / wall, 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux; else 0)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    env["FACETRAIL_SEARCH_RATE"] = "1000000000"
    proc = subprocess.Popen(
        [sys.executable, "-m", "facetrail", "--home", str(home), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/openapi.json", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start")


def over_http(url: str, token: str, shas: list[str], clients: int, requests: int
              ) -> dict[str, Any]:
    per_client = max(1, requests // clients)
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=600) as http:
            http.get("/api/me")  # open the connection before timing
            barrier.wait()
            for i in range(per_client):
                body = {"probe_sha256": shas[(k + i * clients) % len(shas)], **CASE}
                t = time.perf_counter()
                response = http.post("/api/searches", json=body)
                elapsed = (time.perf_counter() - t) * 1000
                with lock:
                    if response.status_code == 201:
                        times.append(elapsed)
                    else:
                        errors.append(response.text)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return {**percentiles(times), "clients": clients, "per_s": round(len(times) / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=100_000, help="gallery size")
    parser.add_argument("--per-image", type=int, default=100, help="faces per synthetic image")
    parser.add_argument("--clients", default="1,4,16", help="concurrent HTTP clients")
    parser.add_argument("--requests", type=int, default=48,
                        help="searches per concurrency level, and in process")
    parser.add_argument("--probes", type=int, default=12, help="distinct probe photos")
    parser.add_argument("--sigma", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="photos whose descriptors seed the gallery")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    photos = probe_photos(args.probes)
    with tempfile.TemporaryDirectory(prefix="facetrail-api-bench-") as tmp:
        home = Path(tmp) / "home"
        t = time.perf_counter()
        token, model = build_gallery(home, args.faces, args.per_image, args.sigma,
                                     args.data.resolve(), rng)
        build_s = time.perf_counter() - t

        busy0, own0 = system_busy_seconds(), time.process_time()
        local = in_process(home, photos, args.requests)
        proc, url = start_server(home)
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                              timeout=600) as http:
                shas = [http.post("/api/probes", files={"file": ("p.jpg", data)}
                                  ).json()["probe"]["sha256"] for data in photos]
                for sha in shas[:2]:  # warm the server's models
                    http.post("/api/searches", json={"probe_sha256": sha, **CASE})
            levels = [over_http(url, token, shas, int(c), args.requests)
                      for c in args.clients.split(",")]
            server_cpu = cpu_seconds(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=120)
        others = (system_busy_seconds() - busy0) - (time.process_time() - own0) - server_cpu
    result = {"faces": args.faces, "model": model, "build_seconds": round(build_s, 1),
              "in_process": local, "http": levels,
              "other_processes_cpu_s": round(max(0.0, others), 1)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"gallery: {args.faces:,} {model} faces (built through the store in {build_s:.0f} s)")
    print(f"{'search':<24}{'clients':>8}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'searches/s':>12}"
          f"{'p50 / in-process':>19}")
    print(f"{'in-process (engine)':<24}{1:>8}{local['n']:>6}{local['p50_ms']:>10}"
          f"{local['p99_ms']:>10}{local['per_s']:>12}{'1.00':>19}")
    for level in levels:
        ratio = level["p50_ms"] / local["p50_ms"]
        print(f"{'HTTP POST /api/searches':<24}{level['clients']:>8}{level['n']:>6}"
              f"{level['p50_ms']:>10}{level['p99_ms']:>10}{level['per_s']:>12}{ratio:>19.2f}")
    print(f"CPU used by other processes meanwhile: {result['other_processes_cpu_s']} s")


if __name__ == "__main__":
    main()
