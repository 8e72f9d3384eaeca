"""Ingest throughput: facetrail against the ``face_recognition`` package, on one folder.

Run from the repository root (the bench extra, ``face_recognition``, must be installed):

    .venv/bin/python bench/ingest_throughput.py
    .venv/bin/python bench/ingest_throughput.py --data ../shared/data/faces-small --json
    .venv/bin/python bench/ingest_throughput.py --runtimes onnx   # skip facetrail on dlib

One command runs every side, one after the other, each in its own child process of this
script, so that each child's peak memory is its own and the timings share the machine's
conditions (the machine is noisy: compare the ratios, not the absolute numbers):

1. baseline: ``face_recognition``, in one process, per image ``load_image_file`` ->
   ``face_locations`` (HOG, upsample 1) -> ``face_encodings``;
2. facetrail, once per descriptor runtime in ``--runtimes`` (default ``onnx,dlib``): a fresh
   temporary home, ``add_source`` of the folder, ``ingest`` with default settings (one worker
   process per core) except ``FACETRAIL_DESCRIPTOR_RUNTIME``.

Both see the same files: every ``.jpg``, ``.jpeg`` and ``.png`` under the folder. Then the
face boxes are matched per image (IoU >= 0.5) to show how many of the baseline's faces
facetrail also finds, and how many it finds that the baseline does not; the facetrail runs are
compared with each other face by face (same boxes, largest descriptor difference).

The child modes ``--baseline-only`` and ``--facetrail-only`` print one JSON document each;
they are what the default mode runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _machine import system_busy_seconds

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces-small"
SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
IOU_MATCH = 0.5

Box = tuple[int, int, int, int]
"""(x, y, w, h): left, top, width, height, in pixels; facetrail's convention."""


# -- the shared file list --------------------------------------------------------------------
def image_files(root: Path) -> list[Path]:
    """Every file with an image suffix under ``root``, in facetrail's folder-walk order."""
    root = root.resolve()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in SUFFIXES:
                files.append(Path(dirpath) / name)
    return files


def relative(path: str | Path, root: Path) -> str:
    return str(Path(path).resolve().relative_to(root.resolve()))


# -- memory ------------------------------------------------------------------------------------
def _rss_kb(pid: int) -> int:
    """Resident set size of one process in KiB, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                children = [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
        for child in children:
            found.append(child)
            found.extend(_descendants(child))
    return found


@contextmanager
def tree_rss_sampler(interval: float = 0.1) -> Iterator[Callable[[], int]]:
    """Sample the summed RSS (KiB) of this process and its descendants; yields a getter of
    the peak. Linux only (reads /proc); on other systems the peak stays 0. Shared pages (the
    Python runtime, libraries) count once per process, so this overstates real use."""
    peak = 0
    stop = threading.Event()

    def run() -> None:
        nonlocal peak
        me = os.getpid()
        while not stop.is_set():
            peak = max(peak, sum(_rss_kb(p) for p in [me, *_descendants(me)]))
            stop.wait(interval)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield lambda: peak
    finally:
        stop.set()
        thread.join()


def peak_rss_mb() -> dict[str, float]:
    """Peak RSS of this process, and of the largest of its waited-for children, in MB."""
    # ru_maxrss is in KiB on Linux. For RUSAGE_CHILDREN it is the peak of the single
    # largest child (descendants included once waited for), not a sum over children.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"self": round(own / 1024, 1), "child_max": round(children / 1024, 1)}


# -- baseline: face_recognition ----------------------------------------------------------------
def run_baseline(root: Path) -> dict[str, Any]:
    files = image_files(root)
    with tree_rss_sampler() as sampled_peak:
        started = time.perf_counter()
        import face_recognition  # loads the dlib models at import

        loaded = time.perf_counter()
        boxes: dict[str, list[Box]] = {}
        errors: dict[str, str] = {}
        faces = 0
        for file in files:
            try:
                img = face_recognition.load_image_file(file)
                locations = face_recognition.face_locations(img)  # HOG, upsample 1
                encodings = face_recognition.face_encodings(img, locations)
            except Exception as exc:  # record it and go on, as facetrail does
                errors[relative(file, root)] = f"{type(exc).__name__}: {exc}"
                continue
            faces += len(encodings)
            boxes[relative(file, root)] = [css_to_box(css, img.shape) for css in locations]
        finished = time.perf_counter()
    return {
        "name": "face_recognition",
        "version": _dist_version("face_recognition"),
        "processes": 1,
        "images": len(files),
        "errors": len(errors),
        "error_details": errors,
        "faces": faces,
        "seconds": round(finished - started, 3),
        "load_seconds": round(loaded - started, 3),
        "rss_mb": {**peak_rss_mb(), "tree_sampled": round(sampled_peak() / 1024, 1)},
        "boxes": boxes,
    }


def css_to_box(css: tuple[int, int, int, int], shape: tuple[int, ...]) -> Box:
    """face_recognition's (top, right, bottom, left), right and bottom inclusive, to (x, y, w, h)
    clipped to the image the way facetrail clips its own boxes."""
    top, right, bottom, left = css
    right, bottom = min(shape[1], right + 1), min(shape[0], bottom + 1)
    return (left, top, max(1, right - left), max(1, bottom - top))


# -- facetrail ---------------------------------------------------------------------------------
_WARM_MODELS = """
import sys
from pathlib import Path
from facetrail.faces.dlib_backend import hog_detector, weights_path
from facetrail.faces.onnx_convert import cached_model
models = Path(sys.argv[1])
hog_detector(models)
cached_model(weights_path("resnet"), models)
"""


def run_facetrail(root: Path, warm_models: bool = False) -> dict[str, Any]:
    """One facetrail ingest; FACETRAIL_DESCRIPTOR_RUNTIME (set by the parent) picks the runtime.
    With ``warm_models``, the home's derived model files are made first, untimed, in another
    process, as they are for every ingest into a home after the first."""
    files = image_files(root)
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-") as home:
        warm_up_cpu = 0.0
        if warm_models:
            subprocess.run([sys.executable, "-c", _WARM_MODELS, str(Path(home) / "models")],
                           check=True)
            warm_up_cpu = children_cpu_seconds()
        with tree_rss_sampler() as sampled_peak:
            started = time.perf_counter()
            import facetrail

            with facetrail.open(home) as ft:
                ft.add_source(
                    "bench", "folder", root,
                    lawful_basis="benchmark on a public test set",
                    purpose="ingest throughput benchmark",
                    retention_days=1,
                )
                # facetrail reads more suffixes than the baseline (.webp, .gif, ...); if the
                # folder holds any, hand it the baseline's list so both see the same files.
                targets = None if _same_walk(root, files) else files
                workers = ft.settings.workers or os.cpu_count() or 1
                report = ft.ingest("bench", targets)
            finished = time.perf_counter()
        boxes, errors = read_store(Path(home), root)
        vectors = read_vectors(Path(home), root)
    return {
        "name": "facetrail",
        "runtime": ft.analyzer.backend.runtime,
        "warm_models": warm_models,
        "warm_up_cpu_seconds": warm_up_cpu,  # not part of the timed ingest
        "version": facetrail.__version__,
        "processes": workers,
        "images": report.items,
        "images_analysed": report.images_new,
        "duplicates": report.duplicates,
        "errors": report.errors,
        "error_details": errors,
        "faces": report.faces,
        "seconds": round(finished - started, 3),
        "ingest_seconds": report.seconds,
        "rss_mb": {**peak_rss_mb(), "tree_sampled": round(sampled_peak() / 1024, 1)},
        "boxes": boxes,
        "vectors": vectors,
    }


def _same_walk(root: Path, files: list[Path]) -> bool:
    from facetrail.sources.base import IMAGE_SUFFIXES

    facetrail_count = sum(
        1
        for _, _, names in os.walk(root)
        for name in names
        if Path(name).suffix.lower() in IMAGE_SUFFIXES
    )
    return facetrail_count == len(files)


def read_store(home: Path, root: Path) -> tuple[dict[str, list[Box]], dict[str, str]]:
    """Face boxes per file (relative path), and ingest errors, straight from the SQLite store."""
    db = sqlite3.connect(home / "facetrail.db")
    try:
        boxes: dict[str, list[Box]] = {}
        # A duplicate file shares its image (and faces) with the first copy: one row per
        # appearance gives each copy its boxes. Images with no face have no rows here.
        rows = db.execute(
            "SELECT a.location, f.x, f.y, f.w, f.h FROM faces f"
            " JOIN images i ON i.id = f.image_id"
            " JOIN appearances a ON a.image_id = i.id"
            " ORDER BY a.location, f.ordinal"
        ).fetchall()
        for location, x, y, w, h in rows:
            boxes.setdefault(relative(location, root), []).append((x, y, w, h))
        errors = {
            relative(location, root): f"{code}: {reason}"
            for location, code, reason in db.execute(
                "SELECT location, code, reason FROM ingest_errors"
            )
        }
    finally:
        db.close()
    return boxes, errors


def read_vectors(home: Path, root: Path) -> dict[str, list[list[float]]]:
    """Descriptors per ``file#ordinal``, to compare the runtimes face by face."""
    import numpy as np

    db = sqlite3.connect(home / "facetrail.db")
    try:
        rows = db.execute(
            "SELECT a.location, f.ordinal, f.embedding FROM faces f"
            " JOIN appearances a ON a.image_id = f.image_id"
        ).fetchall()
    finally:
        db.close()
    return {
        f"{relative(location, root)}#{ordinal}": np.frombuffer(blob, "<f4").tolist()
        for location, ordinal, blob in rows
    }


def compare_runs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Do two facetrail runs find the same faces, and how far apart are their descriptors?"""
    import numpy as np

    same_faces = a["boxes"] == b["boxes"] and a["vectors"].keys() == b["vectors"].keys()
    diffs = [
        float(np.abs(np.subtract(a["vectors"][k], b["vectors"][k])).max())
        for k in a["vectors"].keys() & b["vectors"].keys()
    ]
    return {
        "runtimes": [a["runtime"], b["runtime"]],
        "same_faces": same_faces,
        "faces_compared": len(diffs),
        "max_abs_descriptor_diff": max(diffs, default=0.0),
    }


# -- comparison --------------------------------------------------------------------------------
def iou(a: Box, b: Box) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


def match_faces(baseline: list[Box], ours: list[Box], threshold: float = IOU_MATCH) -> int:
    """Greedy one-to-one matching by decreasing IoU; returns the number of matched pairs."""
    pairs = sorted(
        ((iou(a, b), i, j) for i, a in enumerate(baseline) for j, b in enumerate(ours)),
        reverse=True,
    )
    used_a: set[int] = set()
    used_b: set[int] = set()
    for score, i, j in pairs:
        if score < threshold:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
    return len(used_a)


@dataclass
class FaceMatch:
    baseline_faces: int
    facetrail_faces: int
    matched: int
    images_differing: list[str]

    @property
    def missed(self) -> int:
        return self.baseline_faces - self.matched

    @property
    def extra(self) -> int:
        return self.facetrail_faces - self.matched


def compare_boxes(
    baseline: dict[str, list[Box]], ours: dict[str, list[Box]], files: list[str]
) -> FaceMatch:
    total_a = total_b = matched = 0
    differing = []
    for file in files:
        a, b = baseline.get(file, []), ours.get(file, [])
        m = match_faces(a, b)
        total_a, total_b, matched = total_a + len(a), total_b + len(b), matched + m
        if m != len(a) or m != len(b):
            differing.append(f"{file}: baseline {len(a)}, facetrail {len(b)}, matched {m}")
    return FaceMatch(total_a, total_b, matched, differing)


# -- orchestration -----------------------------------------------------------------------------
def run_child(
    mode: str, data: Path, runtime: str | None = None, warm_models: bool = False
) -> dict[str, Any]:
    """Run this script in ``mode`` in a child process and return its JSON document, with the
    CPU time the child's process tree used and the CPU time other processes used meanwhile."""
    # Default settings for facetrail: no FACETRAIL_* overrides leak in from the environment,
    # except the descriptor runtime asked for.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    if runtime is not None:
        env["FACETRAIL_DESCRIPTOR_RUNTIME"] = runtime
    cmd = [sys.executable, str(Path(__file__).resolve()), mode, "--json", "--data", str(data)]
    if warm_models:
        cmd.append("--warm-models")
    busy_before, own_before = system_busy_seconds(), children_cpu_seconds()
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    own = children_cpu_seconds() - own_before
    others = max(0.0, system_busy_seconds() - busy_before - own)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{mode} failed with exit code {done.returncode}")
    result = json.loads(done.stdout)
    own -= result.get("warm_up_cpu_seconds", 0.0)
    result["cpu_seconds"] = round(own, 1)
    result["other_processes_cores"] = round(others / wall, 2) if wall else 0.0
    return result


def children_cpu_seconds() -> float:
    """User + system CPU of this process's waited-for children (and theirs), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def warm_file_cache(files: list[Path]) -> None:
    """Read every file once so neither run pays for a cold disk."""
    for file in files:
        file.read_bytes()


def rates(run: dict[str, Any]) -> dict[str, Any]:
    seconds = run["seconds"]
    return {
        **{k: v for k, v in run.items() if k not in ("boxes", "error_details", "vectors")},
        "images_per_s": round(run["images"] / seconds, 3),
        "faces_per_s": round(run["faces"] / seconds, 3),
    }


def summarise(data: Path, baseline: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    files = [relative(f, data) for f in image_files(data)]
    base = rates(baseline)
    sides = []
    for ours in runs:
        match = compare_boxes(baseline["boxes"], ours["boxes"], files)
        mine = rates(ours)
        sides.append({
            **mine,
            "speedup_images_per_s": round(mine["images_per_s"] / base["images_per_s"], 3),
            "face_match": {
                "iou_threshold": IOU_MATCH,
                "baseline_faces": match.baseline_faces,
                "facetrail_faces": match.facetrail_faces,
                "baseline_found_by_facetrail": match.matched,
                "baseline_missed_by_facetrail": match.missed,
                "facetrail_extra": match.extra,
                "images_differing": match.images_differing,
            },
        })
    return {
        "data": str(data),
        "cpu_count": os.cpu_count(),
        "baseline": base,
        "facetrail": sides,
        "runtimes_compared": [compare_runs(runs[0], r) for r in runs[1:]],
        "errors": {
            "baseline": baseline["error_details"],
            **{f"facetrail ({r['runtime']})": r["error_details"] for r in runs},
        },
    }


def print_table(summary: dict[str, Any]) -> None:
    base, sides = summary["baseline"], summary["facetrail"]
    runs = [base, *sides]

    def mem(run: dict[str, Any]) -> str:
        rss = run["rss_mb"]
        if run["processes"] == 1:
            return f"{rss['self']:.0f}"
        return f"{rss['self']:.0f} + {run['processes']}x{rss['child_max']:.0f}"

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> tuple[str, ...]:
        return (label, *(cell(r) for r in runs))

    rows = [
        ("", "face_recognition",
         *(f"facetrail {s['runtime']}{' (warm)' * s['warm_models']}" for s in sides)),
        row("processes", lambda r: str(r["processes"])),
        row("images", lambda r: str(r["images"])),
        row("errors", lambda r: str(r["errors"])),
        row("faces", lambda r: str(r["faces"])),
        row("seconds", lambda r: f"{r['seconds']:.1f}"),
        row("images/s", lambda r: f"{r['images_per_s']:.2f}"),
        row("faces/s", lambda r: f"{r['faces_per_s']:.2f}"),
        row("CPU seconds (whole process tree)", lambda r: f"{r['cpu_seconds']:.1f}"),
        row("other processes' load (cores)", lambda r: f"{r['other_processes_cores']:.2f}"),
        row("peak RSS MB (main + workers)", mem),
        row("peak RSS MB (tree, sampled)", lambda r: f"{r['rss_mb']['tree_sampled']:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"data: {summary['data']}  (cpu_count {summary['cpu_count']})")
    for label, *cells in rows:
        print(f"{label:<{width}}" + "".join(f"  {c:>16}" for c in cells))
    for side in sides:
        print()
        speedup = side["speedup_images_per_s"]
        print(f"facetrail {side['runtime']}: speed-up (images/s / face_recognition images/s): "
              f"{speedup:.2f}x  ({speedup / side['processes']:.2f}x per worker process)")
        fm = side["face_match"]
        print(
            f"faces matched at IoU >= {fm['iou_threshold']}: facetrail found "
            f"{fm['baseline_found_by_facetrail']} of the baseline's {fm['baseline_faces']} "
            f"({fm['baseline_missed_by_facetrail']} missed), plus {fm['facetrail_extra']} extra "
            f"(facetrail total {fm['facetrail_faces']})"
        )
        if fm["images_differing"]:
            print("images where the two differ:")
            for line in fm["images_differing"]:
                print(f"  {line}")
    for cmp in summary["runtimes_compared"]:
        a, b = cmp["runtimes"]
        print()
        print(f"facetrail {a} against facetrail {b}: "
              f"{'the same faces' if cmp['same_faces'] else 'DIFFERENT faces'}; largest "
              f"descriptor difference over {cmp['faces_compared']} faces: "
              f"{cmp['max_abs_descriptor_diff']:.1e}")
    for side, errors in summary["errors"].items():
        for file, reason in errors.items():
            print(f"{side} error: {file}: {reason}")


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder of images (default: {DEFAULT_DATA})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--baseline-only", action="store_true",
                      help="run only the face_recognition side (JSON on stdout)")
    mode.add_argument("--facetrail-only", action="store_true",
                      help="run only one facetrail side (JSON on stdout)")
    parser.add_argument("--runtimes", default="onnx,dlib",
                        help="facetrail descriptor runtimes to run, in order (default onnx,dlib)")
    parser.add_argument("--warm-models", action="store_true",
                        help="make the home's derived model files before timing facetrail, as "
                        "for any ingest into a home after the first (default: a cold home)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = args.data.resolve()
    if not data.is_dir():
        raise SystemExit(f"{data} is not a folder")
    if args.baseline_only or args.facetrail_only:
        result = (
            run_baseline(data) if args.baseline_only else run_facetrail(data, args.warm_models)
        )
        json.dump(result, sys.stdout)
        return
    files = image_files(data)
    if not files:
        raise SystemExit(f"no {', '.join(sorted(SUFFIXES))} files under {data}")
    warm_file_cache(files)
    print(f"baseline: face_recognition on {len(files)} images ...", file=sys.stderr)
    baseline = run_child("--baseline-only", data)
    runs = []
    for runtime in args.runtimes.split(","):
        print(f"facetrail ({runtime}): ingest into a temporary home ...", file=sys.stderr)
        runs.append(run_child("--facetrail-only", data, runtime.strip(), args.warm_models))
    summary = summarise(data, baseline, runs)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print_table(summary)


if __name__ == "__main__":
    main()
