"""Ingest throughput: facetrail against the ``face_recognition`` package, on one folder.

Run from the repository root (the bench extra, ``face_recognition``, must be installed):

    .venv/bin/python bench/ingest_throughput.py
    .venv/bin/python bench/ingest_throughput.py --data ../shared/data/faces-small --json
    .venv/bin/python bench/ingest_throughput.py --models yunet-sface --no-stages

One command runs every side, one after the other, each in its own child process of this
script, so that each child's peak memory is its own and the timings share the machine's
conditions (the machine is noisy: compare the ratios, not the absolute numbers):

1. baseline: ``face_recognition``, in one process, per image ``load_image_file`` ->
   ``face_locations`` (HOG, upsample 1) -> ``face_encodings``, each call timed;
2. facetrail, once per face model in ``--models`` (default ``yunet-sface,dlib``): a new
   temporary home with that model, ``add_source`` of the folder, ``ingest`` with default
   settings (one worker process per core);
3. per model, the stages in one process (``--stages-only``): every image decoded, then
   ``Analyzer.model.detector.detect`` (faces under ``min_face_px`` dropped, as the analyzer
   drops them), ``embedder.align`` and ``embedder.embed`` (all of an
   image's faces in one call, as a worker makes it) and the quality score, each timed, with
   an ingest worker's settings (one ONNX Runtime thread).

Both see the same files: every ``.jpg``, ``.jpeg`` and ``.png`` under the folder. Then the
face boxes are matched per image (IoU >= 0.5, and >= 0.3) to show how many of the baseline's
faces facetrail also finds, and how many it finds that the baseline does not.

The child modes ``--baseline-only``, ``--facetrail-only`` and ``--stages-only`` print one JSON
document each; they are what the default mode runs.
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

from _machine import code_state, system_busy_seconds

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces-small"
SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
IOU_MATCH = 0.5
IOU_LOOSE = 0.3
"""A second, looser match: YuNet's boxes reach higher up the forehead than dlib's HOG boxes,
so a few faces both find overlap at IoU 0.3-0.5 only."""
TARGET = 10.0
"""images/s ratio to face_recognition that yunet-sface should reach on the 2-core machines."""

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
        stage = {"decode": 0.0, "detect": 0.0, "embed": 0.0}
        for file in files:
            try:
                t0 = time.perf_counter()
                img = face_recognition.load_image_file(file)
                t1 = time.perf_counter()
                locations = face_recognition.face_locations(img)  # HOG, upsample 1
                t2 = time.perf_counter()
                encodings = face_recognition.face_encodings(img, locations)
                t3 = time.perf_counter()
            except Exception as exc:  # record it and go on, as facetrail does
                errors[relative(file, root)] = f"{type(exc).__name__}: {exc}"
                continue
            stage["decode"] += t1 - t0
            stage["detect"] += t2 - t1
            stage["embed"] += t3 - t2  # 5-point landmarks, chip and ResNet
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
        "stage_seconds": {k: round(v, 3) for k, v in stage.items()},
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
from facetrail.faces import make_model
from facetrail.settings import load_settings
settings = load_settings(sys.argv[1])
make_model(sys.argv[2], settings).load()
"""


def run_facetrail(root: Path, model: str, warm_models: bool = False) -> dict[str, Any]:
    """One facetrail ingest into a new home with face model ``model``. With ``warm_models``,
    whatever the model derives into ``<home>/models`` on first use is made first, untimed, in
    another process, as it is for every ingest into a home after the first."""
    files = image_files(root)
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-") as home:
        warm_up_cpu = 0.0
        if warm_models:
            subprocess.run([sys.executable, "-c", _WARM_MODELS, home, model], check=True)
            warm_up_cpu = children_cpu_seconds()
        with tree_rss_sampler() as sampled_peak:
            started = time.perf_counter()
            import facetrail

            with facetrail.open(home, face_model=model) as ft:
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
                face_model = ft.analyzer.model
            finished = time.perf_counter()
        boxes, errors = read_store(Path(home), root)
    return {
        "name": "facetrail",
        "model": model,
        "model_key": face_model.model.key,
        "runtime": face_model.runtime,
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
    }


def run_stages(root: Path, model: str) -> dict[str, Any]:
    """Each stage of the analysis of every image, timed in this one process: decode
    (``imaging.decode``), ``model.detector.detect`` (and the analyzer's ``min_face_px``
    filter), ``model.embedder.align`` and ``embed``
    (one call per image, with all its faces, as a worker makes them), and the analyzer's
    quality scoring (``sharpness`` of each chip). Settings are an ingest worker's: one ONNX
    Runtime thread per process when there is one worker per core."""
    from facetrail import imaging
    from facetrail.pipeline.analyze import Analyzer, clip_box, sharpness
    from facetrail.settings import load_settings

    files = image_files(root)
    blobs = [f.read_bytes() for f in files]
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-") as home:
        settings = load_settings(home, face_model=model, workers=os.cpu_count() or 1)
        started = time.perf_counter()
        analyzer = Analyzer(settings)
        face_model = analyzer.model
        face_model.load()
        load_seconds = time.perf_counter() - started
        detector, embedder = face_model.detector, face_model.embedder

        def analyse(data: bytes, timings: dict[str, list[float]] | None) -> int:
            marks = [time.perf_counter(), time.process_time()]

            def lap(name: str) -> None:
                wall, cpu = time.perf_counter(), time.process_time()
                if timings is not None:
                    timings[name][0] += wall - marks[0]
                    timings[name][1] += cpu - marks[1]
                marks[:] = [wall, cpu]

            image = imaging.decode(data, settings, sha256=imaging.sha256_hex(data))
            lap("decode")
            # The analyzer keeps faces of at least min_face_px only (Analyzer.faces).
            detections = [
                d for d in detector.detect(image)
                if min(clip_box(d, image.width, image.height)[2:]) >= settings.min_face_px
            ]
            lap("detect")
            chips = embedder.align(image.pixels, detections)
            lap("align")
            if chips:
                embedder.embed(chips)
            lap("embed")
            for chip in chips:
                sharpness(chip)
            lap("quality")
            return len(detections)

        # One unmeasured image with faces first: the first calls allocate and pick kernels.
        warm = next((b for b in blobs if _try(analyse, b)), None)
        del warm
        timings = {k: [0.0, 0.0] for k in STAGES}
        faces = errors = 0
        busy, own, started = system_busy_seconds(), time.process_time(), time.perf_counter()
        for data in blobs:
            try:
                faces += analyse(data, timings)
            except Exception:  # unreadable images: ingest records them as errors
                errors += 1
        wall = time.perf_counter() - started
        others = max(0.0, system_busy_seconds() - busy - (time.process_time() - own))
    return {
        "model": model,
        "model_key": face_model.model.key,
        "threads": getattr(embedder, "threads", 1),
        "images": len(blobs),
        "errors": errors,
        "faces": faces,
        "load_seconds": round(load_seconds, 3),
        "wall_seconds": {k: round(v[0], 3) for k, v in timings.items()},
        "stage_cpu_seconds": {k: round(v[1], 3) for k, v in timings.items()},
        "other_processes_cores": round(others / wall, 2) if wall else 0.0,
    }


STAGES = ("decode", "detect", "align", "embed", "quality")


def _try(analyse: Callable[[bytes, Any], int], data: bytes) -> bool:
    try:
        return analyse(data, None) > 0
    except Exception:
        return False


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
    baseline: dict[str, list[Box]], ours: dict[str, list[Box]], files: list[str],
    threshold: float = IOU_MATCH,
) -> FaceMatch:
    total_a = total_b = matched = 0
    differing = []
    for file in files:
        a, b = baseline.get(file, []), ours.get(file, [])
        m = match_faces(a, b, threshold)
        total_a, total_b, matched = total_a + len(a), total_b + len(b), matched + m
        if m != len(a) or m != len(b):
            differing.append(f"{file}: baseline {len(a)}, facetrail {len(b)}, matched {m}, "
                             f"{len(a) - m} missed")
    return FaceMatch(total_a, total_b, matched, differing)


# -- orchestration -----------------------------------------------------------------------------
def run_child(
    mode: str, data: Path, model: str | None = None, warm_models: bool = False
) -> dict[str, Any]:
    """Run this script in ``mode`` in a child process and return its JSON document, with the
    CPU time the child's process tree used and the CPU time other processes used meanwhile."""
    # Default settings for facetrail: no FACETRAIL_* overrides leak in from the environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    cmd = [sys.executable, str(Path(__file__).resolve()), mode, "--json", "--data", str(data)]
    if model is not None:
        cmd += ["--models", model]
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
    result.setdefault("other_processes_cores", round(others / wall, 2) if wall else 0.0)
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
        **{k: v for k, v in run.items() if k not in ("boxes", "error_details")},
        "images_per_s": round(run["images"] / seconds, 3),
        "faces_per_s": round(run["faces"] / seconds, 3),
    }


def face_match(baseline: dict[str, list[Box]], ours: dict[str, list[Box]], files: list[str],
               threshold: float) -> dict[str, Any]:
    match = compare_boxes(baseline, ours, files, threshold)
    return {
        "iou_threshold": threshold,
        "baseline_faces": match.baseline_faces,
        "facetrail_faces": match.facetrail_faces,
        "baseline_found_by_facetrail": match.matched,
        "baseline_missed_by_facetrail": match.missed,
        "facetrail_extra": match.extra,
        "images_differing": match.images_differing,
    }


def summarise(data: Path, baseline: dict[str, Any], runs: list[dict[str, Any]],
              stages: list[dict[str, Any]], target: float) -> dict[str, Any]:
    files = [relative(f, data) for f in image_files(data)]
    base = rates(baseline)
    sides = []
    for ours in runs:
        mine = rates(ours)
        speedup = mine["images_per_s"] / base["images_per_s"]
        sides.append({
            **mine,
            "speedup_images_per_s": round(speedup, 3),
            "target_speedup": target,
            "target_met": speedup >= target,
            "face_match": face_match(baseline["boxes"], ours["boxes"], files, IOU_MATCH),
            "face_match_loose": face_match(baseline["boxes"], ours["boxes"], files, IOU_LOOSE),
        })
    return {
        "data": str(data),
        "cpu_count": os.cpu_count(),
        "code": code_state(str(REPO)),
        "baseline": base,
        "facetrail": sides,
        "stages": stages,
        "errors": {
            "baseline": baseline["error_details"],
            **{f"facetrail ({r['model']})": r["error_details"] for r in runs},
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

    def speedup(r: dict[str, Any]) -> str:
        return f"{r['speedup_images_per_s']:.2f}x" if "speedup_images_per_s" in r else "1.00x"

    def matched(r: dict[str, Any], key: str) -> str:
        if key not in r:
            return "-"
        fm = r[key]
        return (f"{fm['baseline_found_by_facetrail']}/{fm['baseline_missed_by_facetrail']}"
                f"/{fm['facetrail_extra']}")

    rows = [
        ("", "face_recognition",
         *(f"{s['model']}{' (warm)' * s['warm_models']}" for s in sides)),
        row("processes", lambda r: str(r["processes"])),
        row("images", lambda r: str(r["images"])),
        row("errors", lambda r: str(r["errors"])),
        row("faces", lambda r: str(r["faces"])),
        row("seconds", lambda r: f"{r['seconds']:.1f}"),
        row("images/s", lambda r: f"{r['images_per_s']:.2f}"),
        row("faces/s", lambda r: f"{r['faces_per_s']:.2f}"),
        row("images/s ratio to face_recognition", speedup),
        row("CPU seconds (whole process tree)", lambda r: f"{r['cpu_seconds']:.1f}"),
        row("other processes' load (cores)", lambda r: f"{r['other_processes_cores']:.2f}"),
        row(f"baseline faces matched/missed/extra, IoU>={IOU_MATCH}",
            lambda r: matched(r, "face_match")),
        row(f"baseline faces matched/missed/extra, IoU>={IOU_LOOSE}",
            lambda r: matched(r, "face_match_loose")),
        row("peak RSS MB (main + workers)", mem),
        row("peak RSS MB (tree, sampled)", lambda r: f"{r['rss_mb']['tree_sampled']:.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    code = summary["code"]
    print(f"data: {summary['data']}  (cpu_count {summary['cpu_count']}; code {code['commit']}, "
          f"src {code['src_sha256']})")
    for label, *cells in rows:
        print(f"{label:<{width}}" + "".join(f"  {c:>16}" for c in cells))
    for side in sides:
        print()
        ratio = side["speedup_images_per_s"]
        verdict = "met" if side["target_met"] else "MISSED"
        print(f"facetrail {side['model']}: {ratio:.2f}x face_recognition's images/s "
              f"({ratio / side['processes']:.2f}x per worker process); target "
              f">= {side['target_speedup']:g}x {verdict}")
        for key in ("face_match", "face_match_loose"):
            fm = side[key]
            print(
                f"faces matched at IoU >= {fm['iou_threshold']}: facetrail found "
                f"{fm['baseline_found_by_facetrail']} of the baseline's {fm['baseline_faces']} "
                f"({fm['baseline_missed_by_facetrail']} missed), plus {fm['facetrail_extra']} "
                f"extra (facetrail total {fm['facetrail_faces']})"
            )
        missing = [line for line in side["face_match"]["images_differing"]
                   if not line.endswith(" 0 missed")]
        if missing:
            print(f"images where facetrail {side['model']} misses a baseline face "
                  f"(IoU >= {IOU_MATCH}):")
            for line in missing:
                print(f"  {line}")
    if summary["stages"]:
        print_stages(base, summary["stages"])
    for side, errors in summary["errors"].items():
        for file, reason in errors.items():
            print(f"{side} error: {file}: {reason}")


def print_stages(base: dict[str, Any], stages: list[dict[str, Any]]) -> None:
    """Per-stage cost in one process: ms per image (decode, detect) or per face (the rest)."""
    print()
    print("per stage, one process (face_recognition: from its run above; facetrail: "
          "--stages-only, one ONNX Runtime thread), wall ms:")
    images, faces = base["images"] - base["errors"], max(1, base["faces"])
    bs = base["stage_seconds"]
    header = ["", "face_recognition", *(s["model"] for s in stages)]
    cells: list[list[str]] = [
        ["decode, ms/image", f"{1000 * bs['decode'] / images:.1f}"],
        ["detect, ms/image", f"{1000 * bs['detect'] / images:.1f}"],
        ["align, ms/face", "(in embed)"],
        ["embed, ms/face", f"{1000 * bs['embed'] / faces:.2f}"],
        ["quality, ms/face", "-"],
        ["faces", str(base["faces"])],
        ["analysis seconds (wall)", f"{sum(bs.values()):.1f}"],
        ["analysis CPU seconds", "-"],
        ["model load seconds", f"{base['load_seconds']:.2f}"],
        ["other processes' load (cores)", f"{base['other_processes_cores']:.2f}"],
    ]
    for st in stages:
        n_img, n_face = st["images"] - st["errors"], max(1, st["faces"])
        w = st["wall_seconds"]
        values = [
            f"{1000 * w['decode'] / n_img:.1f}", f"{1000 * w['detect'] / n_img:.1f}",
            f"{1000 * w['align'] / n_face:.2f}", f"{1000 * w['embed'] / n_face:.2f}",
            f"{1000 * w['quality'] / n_face:.2f}", str(st["faces"]), f"{sum(w.values()):.1f}",
            f"{sum(st['stage_cpu_seconds'].values()):.1f}", f"{st['load_seconds']:.2f}",
            f"{st['other_processes_cores']:.2f}",
        ]
        for line, value in zip(cells, values, strict=True):
            line.append(value)
    width = max(len(c[0]) for c in cells)
    print(f"{header[0]:<{width}}" + "".join(f"  {h:>16}" for h in header[1:]))
    for label, *values in cells:
        print(f"{label:<{width}}" + "".join(f"  {v:>16}" for v in values))


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
                      help="run only one facetrail ingest, of the first of --models (JSON)")
    mode.add_argument("--stages-only", action="store_true",
                      help="time only the stages of the first of --models in one process "
                      "(JSON)")
    parser.add_argument("--models", default="yunet-sface,dlib",
                        help="facetrail face models to run, in order (default: %(default)s)")
    parser.add_argument("--no-stages", action="store_true",
                        help="skip the per-stage timing of each model in one process")
    parser.add_argument("--target", type=float, default=TARGET,
                        help="images/s ratio to face_recognition to report as the target "
                        "(default: %(default)s)")
    parser.add_argument("--warm-models", action="store_true",
                        help="make the home's derived model files before timing facetrail, as "
                        "for any ingest into a home after the first (default: a new home)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = args.data.resolve()
    if not data.is_dir():
        raise SystemExit(f"{data} is not a folder")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.baseline_only or args.facetrail_only or args.stages_only:
        if args.baseline_only:
            result = run_baseline(data)
        elif args.facetrail_only:
            result = run_facetrail(data, models[0], args.warm_models)
        else:
            result = run_stages(data, models[0])
        json.dump(result, sys.stdout)
        return
    files = image_files(data)
    if not files:
        raise SystemExit(f"no {', '.join(sorted(SUFFIXES))} files under {data}")
    warm_file_cache(files)
    print(f"baseline: face_recognition on {len(files)} images ...", file=sys.stderr)
    baseline = run_child("--baseline-only", data)
    runs = []
    for model in models:
        print(f"facetrail ({model}): ingest into a temporary home ...", file=sys.stderr)
        runs.append(run_child("--facetrail-only", data, model, args.warm_models))
    stages = []
    if not args.no_stages:
        for model in models:
            print(f"facetrail ({model}): stages in one process ...", file=sys.stderr)
            stages.append(run_child("--stages-only", data, model))
    summary = summarise(data, baseline, runs, stages, args.target)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print_table(summary)


if __name__ == "__main__":
    main()
