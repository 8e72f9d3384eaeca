"""Ingest on Ray against the local executor: images/s, fixed overhead and memory.

Run from the repository root (the ray extra must be installed):

    .venv/bin/python bench/ray_ingest.py
    .venv/bin/python bench/ray_ingest.py --copies 10 --json

Three executors, each ingesting the same folders into a new temporary home, one after the
other, each ingest in its own child process (the driver):

- ``local``: the local executor (worker processes, one per core);
- ``ray``: the Ray executor on a Ray it starts in the driver, on 127.0.0.1;
- ``cluster``: the Ray executor joining, by address, a one-node cluster on 127.0.0.1
  (``ray start --head``) started by this script before and stopped (by pid) after.

Folders: the fixtures (tests/data/faces/people, 206 photos), and ``--copies`` times as many
generated photos: each fixture photo re-encoded with a small change (a one-pixel border of a
different grey, a different JPEG quality), so that each has a new sha256 and is analysed.

For each: seconds and images/s of the ingest; the fixed overhead, as the seconds to ingest a
folder of one photo (starting the executor, loading the models in every worker); and peak
memory, as the largest sum of resident memory of the driver, its descendants and (for
``cluster``) the cluster's processes, sampled every 0.2 s. Ratios are against ``local`` of the
same command: the machine is shared and noisy, compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _machine import code_state

REPO = Path(__file__).resolve().parent.parent
PEOPLE = REPO / "tests" / "data" / "faces" / "people"
MODES = ("local", "ray", "cluster")


def generate(into: Path, copies: int) -> int:
    """``copies`` re-encoded variants of every fixture photo; returns how many were made."""
    from PIL import Image, ImageOps

    made = 0
    for k in range(copies):
        for photo in sorted(PEOPLE.rglob("*.jpg")):
            with Image.open(photo) as image:
                varied = ImageOps.expand(image.convert("RGB"), border=1, fill=(k * 23) % 256)
                out = into / f"v{k}" / photo.parent.name / photo.name
                out.parent.mkdir(parents=True, exist_ok=True)
                varied.save(out, quality=85 + k % 10)
            made += 1
    return made


def one(mode: str, folder: Path, address: str | None) -> dict[str, Any]:
    """In the child: ingest ``folder`` into a new home; the report's counts and times."""
    import facetrail

    overrides: dict[str, Any] = {"executor": "local" if mode == "local" else "ray"}
    if mode == "cluster":
        overrides["ray_address"] = address
    with tempfile.TemporaryDirectory(prefix="ft-bench-") as tmp:
        home = Path(tmp) / "home"
        started = time.monotonic()
        with facetrail.open(home, **overrides) as engine:
            engine.add_source("s", "folder", folder, lawful_basis="benchmark",
                              purpose="benchmark", retention_days=1)
            report = engine.ingest("s")
        return {"seconds": round(time.monotonic() - started, 2), "images": report.images_new,
                "faces": report.faces, "errors": report.errors}


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def measure(mode: str, folder: Path, address: str | None, extra: list[int]) -> dict[str, Any]:
    """Run ``one`` in a child process, sampling the memory of it, its descendants and
    ``extra``."""
    from facetrail.executors.ray_cluster import descendants

    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--one", mode, str(folder), address or ""],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_kb([proc.pid, *descendants(proc.pid), *extra]))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{mode} on {folder} failed")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(peak / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=5,
                        help="generated photos: this many variants of each fixture photo")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--one", nargs=3, metavar=("MODE", "FOLDER", "ADDRESS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        mode, folder, address = args.one
        print(json.dumps(one(mode, Path(folder), address or None)))
        return

    from facetrail.executors.ray_cluster import RayCluster

    modes = args.modes.split(",")
    results: dict[str, Any] = {"code": code_state(str(REPO)), "cores": os.cpu_count(),
                               "runs": {}}
    with tempfile.TemporaryDirectory(prefix="ft-bench-data-") as tmp:
        single = Path(tmp) / "single"
        single.mkdir()
        shutil.copy(next(iter(sorted(PEOPLE.rglob("*.jpg")))), single / "one.jpg")
        generated = Path(tmp) / "generated"
        made = generate(generated, args.copies)
        folders = {"one photo": single, "fixtures": PEOPLE, f"generated ({made})": generated}
        cluster = RayCluster() if "cluster" in modes else None
        try:
            if cluster is not None:
                cluster.start()
                os.environ.update(cluster.driver_env())  # for the children, which join
            for name, folder in folders.items():
                for mode in modes:
                    extra = cluster.pids() if cluster is not None and mode == "cluster" else []
                    run = measure(mode, folder, cluster.address if cluster else None, extra)
                    results["runs"].setdefault(name, {})[mode] = run
                    if not args.json:
                        print(f"{name:>18} {mode:>8}: {run}", flush=True)
        finally:
            if cluster is not None:
                cluster.stop()
    for runs in results["runs"].values():
        base = runs.get("local")
        for run in runs.values():
            if base and run["images"]:
                run["images_per_s"] = round(run["images"] / run["seconds"], 2)
            if base:
                run["seconds_vs_local"] = round(run["seconds"] / base["seconds"], 2)
                run["rss_vs_local"] = round(run["peak_rss_mb"] / max(1, base["peak_rss_mb"]), 2)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"\n{'folder':>18} {'mode':>8} {'seconds':>8} {'img/s':>7} {'x local':>8} "
          f"{'peak MB':>8} {'x local':>8}")
    for name, runs in results["runs"].items():
        for mode, run in runs.items():
            print(f"{name:>18} {mode:>8} {run['seconds']:>8} {run.get('images_per_s', '-'):>7} "
                  f"{run.get('seconds_vs_local', '-'):>8} {run['peak_rss_mb']:>8} "
                  f"{run.get('rss_vs_local', '-'):>8}")


if __name__ == "__main__":
    main()
