"""Whole searches per second over HTTP against real ``facetrail serve`` processes: 1, 4 and 16
concurrent clients, 1 and 2 server processes, idle and while an ingest job runs, on SQLite and
on PostgreSQL, in one command.

Run from the repository root:

    .venv/bin/python bench/server_throughput.py              # ~10 min
    .venv/bin/python bench/server_throughput.py --quick      # ~3 min: 20k faces, 4 s per level
    .venv/bin/python bench/server_throughput.py --json

What is timed: ``POST /api/searches/upload`` (multipart: a probe photo, case, purpose), the
web app's one-step search, from the client's side: upload, decode, detect, embed the largest
face, search the index, read the candidates, write the audit event, keep the probe and the
search record. Each client is a thread with one keep-alive connection that sends searches
back to back for ``--seconds``; probes are 12 real photos from ``tests/data/faces/people``, in
turn. Throughput is searches completed / wall time; p50 and p99 are over every search of the
level. Before each level every client makes one untimed search (its connection opened, the
models of the process it landed on loaded).

Configurations, each on its own copy of one gallery (``--faces`` synthetic faces: real
yunet-sface descriptors of faces-small tiled with noise, written through the store by
``_gallery.fill_store`` and indexed before the server starts):

- SQLite, 1 process (``serve`` refuses more over SQLite);
- PostgreSQL, 1 and 2 processes (``serve --workers 2``), on a throwaway cluster this script
  starts with ``scripts/postgres-local.sh`` (or ``--postgres URL``: a database there that may
  create others).

Each configuration is measured idle, then while an ingest job runs in the server: ``POST
/api/jobs`` of a folder of faces-small's photos copied ``--ingest-copies`` times, each copy
made new content by a JPEG comment (so nothing is skipped as a duplicate), started before the
levels and cancelled after them; the script checks it was running throughout. The job's ingest
uses the server's default ingest workers (one process per core) at the job thread's lower CPU
priority (``web/jobs.py``: ``JOB_NICENESS``).

Ratios printed: throughput of 4 clients / 1 client per configuration (target: at least 1.7 for
PostgreSQL with 2 processes), and p99 during the ingest / p99 idle per level (target: at most
2). The CPU other processes of the machine used meanwhile (not this script, the servers and
their ingest workers, or the PostgreSQL cluster it started) is printed per level, in cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from _gallery import DEFAULT_DATA, fill_store, load_descriptors, noisy_tiles
from _machine import code_state, system_busy_seconds

REPO = Path(__file__).resolve().parent.parent
PROBES = REPO / "tests" / "data" / "faces" / "people"
CASE = {"case_ref": "BENCH-T", "purpose": "server throughput benchmark"}
IMAGES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Config:
    store: str
    """'sqlite' or 'postgresql'."""
    workers: int

    @property
    def name(self) -> str:
        return f"{self.store} x{self.workers}"


@dataclass
class Level:
    config: str
    ingest: bool
    clients: int
    n: int
    per_s: float
    p50_ms: float
    p99_ms: float
    others_cores: float
    """CPU other processes of the machine used meanwhile, in cores."""
    ingested: int = 0
    """Items the ingest job got through during the level."""


# -- the gallery and the ingest folder ---------------------------------------------------------
def build_gallery(home: Path, store_url: str | None, vectors: np.ndarray, data: Path,
                  per_image: int) -> dict[str, str]:
    """``vectors`` written into a new home (its store at ``store_url``) and indexed; the
    source to ingest during the runs is added later, per copy. Returns role -> token."""
    import facetrail

    overrides: dict[str, Any] = {"workers": 1}
    if store_url is not None:
        overrides["store_url"] = store_url
    with facetrail.open(home, **overrides) as engine:
        fill_store(engine, vectors, per_image, data)
        tokens = {role: engine.add_user(f"bench-{role}", role, actor="bench")[1]
                  for role in ("analyst", "admin")}
        size = engine.index.size  # built here and saved: servers open it warm
    assert size == len(vectors), (size, len(vectors))
    return tokens


def ingest_folder(target: Path, data: Path, copies: int) -> int:
    """``copies`` copies of every JPEG under ``data``, each made distinct content by a JPEG
    comment segment after the start-of-image marker (the pixels are the same). Returns the
    number of files."""
    target.mkdir(parents=True)
    photos = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    n = 0
    for copy in range(copies):
        for k, photo in enumerate(photos):
            raw = photo.read_bytes()
            if raw[:2] != b"\xff\xd8":
                continue
            note = f"facetrail bench copy {copy}".encode()
            segment = b"\xff\xfe" + (len(note) + 2).to_bytes(2, "big") + note
            (target / f"c{copy:03d}-{k:04d}{photo.suffix.lower()}").write_bytes(
                raw[:2] + segment + raw[2:])
            n += 1
    return n


def add_incoming(home: Path, store_url: str | None, folder: Path) -> None:
    import facetrail

    overrides: dict[str, Any] = {"workers": 1}
    if store_url is not None:
        overrides["store_url"] = store_url
    with facetrail.open(home, **overrides) as engine:
        engine.add_source("incoming", "folder", folder, lawful_basis="benchmark",
                          purpose="ingest during searches", retention_days=1, actor="bench")


# -- PostgreSQL --------------------------------------------------------------------------------
class Postgres:
    """A throwaway cluster (``scripts/postgres-local.sh``), or databases on ``url``."""

    def __init__(self, url: str | None) -> None:
        self.dir: Path | None = None
        if url is None:
            # Its own directory under /tmp: the cluster's user must be able to reach it.
            self.dir = Path(tempfile.mkdtemp(prefix="facetrail-bench-pg-"))
            url = subprocess.run(["bash", str(REPO / "scripts" / "postgres-local.sh"), "start",
                                  str(self.dir)], check=True, capture_output=True,
                                 text=True).stdout.strip().splitlines()[-1]
        self.url = url

    def database(self, name: str, template: str | None = None) -> str:
        import psycopg

        sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql)
        return self.url.rsplit("/", 1)[0] + "/" + name

    def drop(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pid(self) -> int | None:
        """The postmaster's pid, when this script started the cluster."""
        if self.dir is None:
            return None
        try:
            return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.dir is not None:
            subprocess.run(["bash", str(REPO / "scripts" / "postgres-local.sh"), "stop",
                            str(self.dir)], check=False, capture_output=True)
            shutil.rmtree(self.dir, ignore_errors=True)


# -- the server ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, store_url: str | None, workers: int, log: Path
                 ) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    env["FACETRAIL_SEARCH_RATE"] = "1000000000"
    # A partial ingest must not move the gallery to the approximate tier as the server stops.
    env["FACETRAIL_INDEX_EXACT_MAX_FACES"] = "10000000"
    if store_url is not None:
        env["FACETRAIL_STORE_URL"] = store_url
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "facetrail", "--home", str(home), "serve", "--port",
             str(port), "--workers", str(workers)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()}")
        try:
            if httpx.get(url + "/openapi.json", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tree_cpu(root: int | None) -> float:
    """CPU seconds of ``root`` and every live process under it, with the children they
    reaped (Linux /proc; else 0)."""
    if root is None:
        return 0.0
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
    total = 0.0
    for pid in cpu:
        p = pid
        while p not in (0, 1) and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += cpu[pid]
    return total


# -- clients -------------------------------------------------------------------------------------
def level(url: str, token: str, photos: list[bytes], clients: int, seconds: float
          ) -> tuple[list[float], float]:
    """``clients`` threads searching back to back for ``seconds``: (latencies ms, wall s)."""
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    go = threading.Event()
    end = [0.0]

    def search(http: httpx.Client, photo: bytes) -> tuple[float, httpx.Response]:
        t = time.perf_counter()
        response = http.post("/api/searches/upload", files={"file": ("probe.jpg", photo)},
                             data=CASE)
        return (time.perf_counter() - t) * 1000, response

    def client(k: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=600) as http:
            search(http, photos[k % len(photos)])  # untimed: connection, models
            ready.wait()
            go.wait()
            i = 0
            while time.perf_counter() < end[0]:
                ms, response = search(http, photos[(k + i * clients) % len(photos)])
                i += 1
                with lock:
                    if response.status_code == 201:
                        times.append(ms)
                    else:
                        errors.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    started = time.perf_counter()
    end[0] = started + seconds
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} searches failed, e.g. {errors[0]}")
    return times, wall


def job_state(url: str, token: str, job_id: int) -> dict[str, Any]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                      timeout=60) as http:
        job: dict[str, Any] = http.get(f"/api/jobs/{job_id}").json()["job"]
        return job


def run_config(config: Config, base_home: Path, base_url: str | None, pg: Postgres | None,
               tokens: dict[str, str], photos: list[bytes], folder: Path, work: Path,
               clients: list[int], seconds: float) -> list[Level]:
    home = work / f"home-{config.store}-{config.workers}"
    shutil.copytree(base_home, home)
    store_url = None
    db = f"bench_{config.store}_{config.workers}"
    if config.store == "postgresql":
        assert pg is not None and base_url is not None
        store_url = pg.database(db, template=base_url.rsplit("/", 1)[1])
    add_incoming(home, store_url, folder)
    proc, url = start_server(home, store_url, config.workers, work / f"{config.name}.log")
    out: list[Level] = []
    try:
        for ingest in (False, True):
            job_id = None
            if ingest:
                with httpx.Client(base_url=url, timeout=60, headers={
                        "Authorization": f"Bearer {tokens['admin']}"}) as admin:
                    job_id = admin.post("/api/jobs", json={"source": "incoming"}
                                        ).json()["job"]["id"]
                deadline = time.monotonic() + 300
                while job_state(url, tokens["admin"], job_id)["progress"].get("items", 0) < 20:
                    if time.monotonic() > deadline:
                        raise SystemExit("the ingest job did not get going")
                    time.sleep(0.5)
            for c in clients:
                before = job_state(url, tokens["admin"], job_id) if job_id else None
                busy, own = system_busy_seconds(), time.process_time()
                server, postgres = tree_cpu(proc.pid), tree_cpu(pg.pid() if pg else None)
                times, wall = level(url, tokens["analyst"], photos, c, seconds)
                others = (system_busy_seconds() - busy) - (time.process_time() - own) - (
                    tree_cpu(proc.pid) - server) - (
                    tree_cpu(pg.pid() if pg else None) - postgres)
                ingested = 0
                if job_id is not None and before is not None:
                    after = job_state(url, tokens["admin"], job_id)
                    if after["status"] != "running":
                        raise SystemExit(f"the ingest job ended during the level ({after}); "
                                         "use more --ingest-copies")
                    ingested = after["progress"].get("items", 0) - before["progress"].get(
                        "items", 0)
                a = np.array(times)
                out.append(Level(
                    config.name, ingest, c, len(times), round(len(times) / wall, 2),
                    round(float(np.percentile(a, 50)), 1), round(float(np.percentile(a, 99)), 1),
                    round(max(0.0, others) / wall, 2), ingested))
                print(f"  {out[-1]}", file=sys.stderr)
            if job_id is not None:
                with httpx.Client(base_url=url, timeout=60, headers={
                        "Authorization": f"Bearer {tokens['admin']}"}) as admin:
                    admin.post(f"/api/jobs/{job_id}/cancel")
    finally:
        stop_server(proc)
        shutil.rmtree(home, ignore_errors=True)
        if pg is not None and store_url is not None:
            pg.drop(db)
    return out


# -- report --------------------------------------------------------------------------------------
def ratios(levels: list[Level]) -> dict[str, Any]:
    by = {(lv.config, lv.ingest, lv.clients): lv for lv in levels}
    scaling = {}
    tails = {}
    for lv in levels:
        one = by.get((lv.config, lv.ingest, 1))
        if lv.clients == 4 and one is not None:
            scaling[f"{lv.config}{' ingest' if lv.ingest else ''}"] = round(lv.per_s / one.per_s, 2)
        idle = by.get((lv.config, False, lv.clients))
        if lv.ingest and idle is not None:
            tails[f"{lv.config}, {lv.clients} clients"] = round(lv.p99_ms / idle.p99_ms, 2)
    return {"throughput_4_over_1": scaling, "p99_ingest_over_idle": tails}


def print_table(levels: list[Level], result: dict[str, Any]) -> None:
    print(f"gallery: {result['faces']:,} yunet-sface faces; {result['seconds']} s per level; "
          f"ingest job over {result['ingest_files']:,} photos; code {result['code']['commit']},"
          f" src {result['code']['src_sha256']}")
    print(f"{'store x processes':<18}{'ingest':>8}{'clients':>8}{'n':>6}{'searches/s':>12}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'ingested':>10}{'others':>8}")
    for lv in levels:
        print(f"{lv.config:<18}{'running' if lv.ingest else '-':>8}{lv.clients:>8}{lv.n:>6}"
              f"{lv.per_s:>12}{lv.p50_ms:>9}{lv.p99_ms:>9}"
              f"{lv.ingested if lv.ingest else '':>10}{lv.others_cores:>8}")
    r = result["ratios"]
    print("throughput, 4 clients / 1 client (target >= 1.7 for postgresql x2, idle):")
    for name, value in r["throughput_4_over_1"].items():
        print(f"  {name:<28}{value:>6}")
    print("p99 while an ingest job runs / p99 idle (target <= 2):")
    for name, value in r["p99_ingest_over_idle"].items():
        print(f"  {name:<28}{value:>6}")
    print("others: CPU used meanwhile by other processes of the machine, in cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=100_000, help="gallery size")
    parser.add_argument("--per-image", type=int, default=100, help="faces per synthetic image")
    parser.add_argument("--clients", default="1,4,16", help="concurrent clients per level")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each level")
    parser.add_argument("--probes", type=int, default=12, help="distinct probe photos")
    parser.add_argument("--ingest-copies", type=int, default=12,
                        help="copies of --data in the folder the ingest job reads")
    parser.add_argument("--configs", default="sqlite:1,postgresql:1,postgresql:2",
                        help="store:processes, comma-separated")
    parser.add_argument("--postgres", default=None, metavar="URL",
                        help="a database whose server may create others (default: start a "
                        "throwaway cluster with scripts/postgres-local.sh)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="photos whose descriptors seed the gallery, copied for the ingest")
    parser.add_argument("--sigma", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--quick", action="store_true",
                        help="20,000 faces, 4 s per level, 4 copies to ingest")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.quick:
        args.faces, args.seconds, args.ingest_copies = 20_000, 4.0, 4

    configs = [Config(s, int(n)) for s, n in (c.split(":") for c in args.configs.split(","))]
    clients = [int(c) for c in args.clients.split(",")]
    photos = [p.read_bytes() for p in sorted(PROBES.glob("*/*.jpg"))[::7][:args.probes]]
    data = args.data.resolve()
    rng = np.random.default_rng(args.seed)
    base = load_descriptors(data, "yunet-sface")
    vectors = noisy_tiles(base, args.faces, args.sigma, rng, unit=True)
    pg = Postgres(args.postgres) if any(c.store == "postgresql" for c in configs) else None
    levels: list[Level] = []
    try:
        with tempfile.TemporaryDirectory(prefix="facetrail-throughput-") as tmp:
            work = Path(tmp)
            folder = work / "incoming"
            files = ingest_folder(folder, data, args.ingest_copies)
            bases: dict[str, tuple[Path, str | None, dict[str, str]]] = {}
            for store in dict.fromkeys(c.store for c in configs):
                home = work / f"base-{store}"
                url = pg.database("bench_base") if store == "postgresql" and pg else None
                print(f"building the {store} gallery ...", file=sys.stderr)
                bases[store] = (home, url, build_gallery(home, url, vectors, data,
                                                         args.per_image))
            for config in configs:
                print(f"{config.name}:", file=sys.stderr)
                home, url, tokens = bases[config.store]
                levels += run_config(config, home, url, pg, tokens, photos, folder, work,
                                     clients, args.seconds)
    finally:
        if pg is not None:
            if args.postgres is not None:
                pg.drop("bench_base")
            pg.stop()
    result = {"faces": args.faces, "seconds": args.seconds, "ingest_files": files,
              "cores": os.cpu_count(), "code": code_state(str(REPO)),
              "levels": [asdict(lv) for lv in levels]}
    result["ratios"] = ratios(levels)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(levels, result)


if __name__ == "__main__":
    main()
