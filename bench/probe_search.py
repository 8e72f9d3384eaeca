"""Probe search latency: a whole ``Facetrail.search`` of real probe photos, in process, on a
gallery of 100,000 faces, per face model.

Run from the repository root:

    .venv/bin/python bench/probe_search.py
    .venv/bin/python bench/probe_search.py --faces 100000 --models yunet-sface,dlib \\
        --probes 64 --rounds 4 --json

What is timed: ``Facetrail.search(photo_bytes, case_ref=..., purpose=...)``, the public call
the CLI makes, from the probe's bytes to the result: hash and decode the photo, detect its
faces, align and embed them, search the index for the largest face (k = 20, the default
threshold), read the candidates from the store, write the audit event. One search at a time,
default settings (a search runs the ONNX models on one thread unless ``--threads``).

The breakdown of every search is measured inside that same call: the face model's detector
and embedder and the engine's index and store are wrapped in timers that delegate to the real
objects, so the stages add up to the search that was timed:

- ``detect``: ``model.detector.detect``; ``align`` and ``embed``: ``model.embedder``;
- ``decode + rest of analysis``: the rest of ``Analyzer.__call__``: decode, boxes, sharpness
  and quality of each face;
- ``index``: ``VectorIndex.search``; ``store + audit``: every ``Store`` call (the candidates'
  rows, the audit event with its hash chain);
- ``other``: the rest (the probe's sha256, checks, threshold and calibration of the
  candidates, the result).

The gallery of each model: that model's real descriptors of ``--data`` (faces-small;
``_gallery.load_descriptors``, cached in ``bench/results/``) tiled to ``--faces`` with
Gaussian noise (unit length again for a cosine model), written through the store as
synthetic images (``_gallery.fill_store``), then indexed as a real home indexes it.

Probes: real photos, every n-th of ``tests/data/faces/people`` and all of ``group``, so that
``--probes`` (at least 50) are searched per round. The models are timed in alternating rounds
(the order reversed every round), so a slow spell of the shared machine hits all of them; the
ratio of their p50s is the number to compare across runs. The CPU other processes used while
timing is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from _gallery import DEFAULT_DATA, fill_store, load_descriptors, noisy_tiles
from _machine import code_state, system_busy_seconds

REPO = Path(__file__).resolve().parent.parent
PEOPLE = REPO / "tests" / "data" / "faces" / "people"
GROUP = REPO / "tests" / "data" / "faces" / "group"
STAGES = ("decode + rest of analysis", "detect", "align", "embed", "index", "store + audit",
          "other")
SLOWEST = 5
TARGET_P50_MS = 50.0
"""p50 of a whole search that yunet-sface should reach at 100k faces on the 2-core machines."""


# -- timers ----------------------------------------------------------------------------------------
class Clock:
    """Seconds spent per stage since the last ``reset``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def reset(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


class TimedDetector:
    """A ``Detector`` that times ``detect`` and delegates to ``inner``."""

    def __init__(self, inner: Any, clock: Clock) -> None:
        self.inner, self.clock = inner, clock

    @property
    def info(self) -> Any:
        return self.inner.info

    def load(self) -> None:
        self.inner.load()

    def detect(self, image: Any) -> Any:
        with self.clock.stage("detect"):
            return self.inner.detect(image)


class TimedEmbedder:
    """An ``Embedder`` that times ``align`` and ``embed`` and delegates to ``inner``."""

    def __init__(self, inner: Any, clock: Clock) -> None:
        self.inner, self.clock = inner, clock
        self.runtime = inner.runtime

    @property
    def info(self) -> Any:
        return self.inner.info

    def load(self) -> None:
        self.inner.load()

    def align(self, pixels: np.ndarray, detections: Sequence[Any]) -> list[np.ndarray]:
        with self.clock.stage("align"):
            return list(self.inner.align(pixels, detections))

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        with self.clock.stage("embed"):
            return np.asarray(self.inner.embed(chips))


class TimedAnalyzer:
    """The engine's ``Analyzer``, its whole call timed (the detector and embedder inside it
    time themselves; the rest of the call is decode and quality scoring)."""

    def __init__(self, inner: Any, clock: Clock) -> None:
        self.inner, self.clock = inner, clock
        self.model = inner.model
        self.settings = inner.settings

    def __call__(self, data: bytes, sha256: str, embed: Any = None) -> Any:
        with self.clock.stage("analysis"):
            return self.inner(data, sha256, embed)

    def faces(self, image: Any, embed: Any = None) -> Any:
        return self.inner.faces(image, embed)


class TimedIndex:
    """The engine's vector index, ``search`` timed."""

    def __init__(self, inner: Any, clock: Clock) -> None:
        self.inner, self.clock = inner, clock

    @property
    def size(self) -> int:
        return int(self.inner.size)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self.clock.stage("index"):
            return cast(tuple[np.ndarray, np.ndarray], self.inner.search(queries, k))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class TimedStore:
    """The engine's store, every method call timed as 'store + audit'."""

    def __init__(self, inner: Any, clock: Clock) -> None:
        self.inner, self.clock = inner, clock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.clock.stage("store + audit"):
                return attr(*args, **kwargs)

        return timed


def instrument(engine: Any, clock: Clock) -> None:
    """Wrap ``engine``'s detector, embedder, analyzer, index and store in timers."""
    model = engine.analyzer.model
    model.detector = TimedDetector(model.detector, clock)
    model.embedder = TimedEmbedder(model.embedder, clock)
    engine.index.size  # noqa: B018 -- build the index before wrapping it
    engine.__dict__["index"] = TimedIndex(engine.__dict__["index"], clock)
    engine.store = TimedStore(engine.store, clock)
    engine.analyzer = TimedAnalyzer(engine.analyzer, clock)


# -- probes and galleries --------------------------------------------------------------------------
def probe_photos(count: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of ``count`` real photos: all of group/ and every n-th of people/."""
    group = sorted(GROUP.glob("*.jpg"))
    people = sorted(PEOPLE.glob("*/*.jpg"))
    wanted = max(1, count - len(group))
    step = max(1, len(people) // wanted)
    chosen = [*people[::step][:wanted], *group]
    return [(str(p.relative_to(REPO / "tests" / "data" / "faces")), p.read_bytes())
            for p in chosen]


def build_home(home: Path, model: str, faces: int, per_image: int, sigma: float, data: Path,
               rng: np.random.Generator, refresh: bool = False) -> dict[str, Any]:
    """A home of face model ``model`` holding a gallery of ``faces`` faces; its build times."""
    import facetrail

    base = load_descriptors(data, model, refresh)
    started = time.perf_counter()
    with facetrail.open(home, face_model=model, workers=1) as engine:
        vectors = noisy_tiles(base, faces, sigma, rng, unit=engine.model.metric == "cosine")
        fill_store(engine, vectors, per_image, data)
        stored = time.perf_counter()
        size = engine.index.size  # built and saved here, as after an ingest
    if size != faces:
        raise SystemExit(f"{model}: the index holds {size} faces, not {faces}")
    return {"store_seconds": round(stored - started, 1),
            "index_seconds": round(time.perf_counter() - stored, 1),
            "real_descriptors": len(base)}


# -- measurement -----------------------------------------------------------------------------------
@dataclass
class ModelResult:
    model: str
    searches: int
    no_face: int
    """Probes in which no face was found (their searches are not in the percentiles)."""
    p50_ms: float
    p99_ms: float
    mean_ms: float
    stage_p50_ms: dict[str, float]
    stage_mean_ms: dict[str, float]
    slowest: list[tuple[str, float, int]]
    """The slowest probes: (photo, its slowest search in ms, faces found in it)."""
    gallery_faces: int
    build: dict[str, Any]
    threads: int


def run(args: argparse.Namespace) -> dict[str, Any]:
    import facetrail
    from facetrail.errors import NoFaceError

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    photos = probe_photos(args.probes)
    rng = np.random.default_rng(args.seed)
    overrides: dict[str, Any] = {"descriptor_threads": args.threads} if args.threads else {}
    with tempfile.TemporaryDirectory(prefix="facetrail-probe-bench-") as tmp, ExitStack() as stack:
        engines: dict[str, Any] = {}
        clocks: dict[str, Clock] = {}
        builds: dict[str, dict[str, Any]] = {}
        for model in models:
            print(f"{model}: building a {args.faces:,}-face gallery ...", file=sys.stderr)
            home = Path(tmp) / model
            builds[model] = build_home(home, model, args.faces, args.per_image, args.sigma,
                                       args.data.resolve(), rng, args.refresh)
            engine = stack.enter_context(facetrail.open(home, **overrides))
            clocks[model] = Clock()
            instrument(engine, clocks[model])
            engines[model] = engine

        def search(model: str, data: bytes) -> dict[str, float] | None:
            clock = clocks[model]
            clock.reset()
            started = time.perf_counter()
            try:
                result = engines[model].search(data, case_ref="BENCH-1",
                                               purpose="probe search benchmark", actor="bench")
            except NoFaceError:
                return None
            total = time.perf_counter() - started
            seconds = dict(clock.seconds)
            inside = seconds.pop("analysis", 0.0)
            seconds["decode + rest of analysis"] = inside - sum(
                seconds[s] for s in ("detect", "align", "embed"))
            seconds["other"] = total - inside - seconds["index"] - seconds["store + audit"]
            return {"total": total, "faces": len(result.probe.faces), **seconds}

        for model in models:  # load the models, warm the caches
            for _, data in photos[:3]:
                search(model, data)
        print(f"timing {len(photos)} probes x {args.rounds} rounds ...", file=sys.stderr)
        samples: dict[str, list[dict[str, float]]] = {m: [] for m in models}
        slowest: dict[str, dict[str, tuple[float, int]]] = {m: {} for m in models}
        no_face = dict.fromkeys(models, 0)
        busy, own, started = system_busy_seconds(), time.process_time(), time.perf_counter()
        for r in range(args.rounds):
            for model in models if r % 2 == 0 else models[::-1]:
                for name, data in photos:
                    sample = search(model, data)
                    if sample is None:
                        no_face[model] += 1
                        continue
                    samples[model].append(sample)
                    took = 1000 * sample["total"]
                    if took > slowest[model].get(name, (0.0, 0))[0]:
                        slowest[model][name] = (round(took, 1), int(sample["faces"]))
        wall = time.perf_counter() - started
        others = max(0.0, system_busy_seconds() - busy - (time.process_time() - own))
        threads = {m: int(getattr(engines[m].analyzer.model.embedder.inner, "threads", 1))
                   for m in models}
    results = []
    for model in models:
        ms = {k: np.array([s[k] for s in samples[model]]) * 1000 for k in ("total", *STAGES)}
        results.append(ModelResult(
            model=model, searches=len(samples[model]), no_face=no_face[model],
            p50_ms=round(float(np.percentile(ms["total"], 50)), 2),
            p99_ms=round(float(np.percentile(ms["total"], 99)), 2),
            mean_ms=round(float(ms["total"].mean()), 2),
            stage_p50_ms={k: round(float(np.percentile(ms[k], 50)), 2) for k in STAGES},
            stage_mean_ms={k: round(float(ms[k].mean()), 2) for k in STAGES},
            slowest=sorted(((n, t, f) for n, (t, f) in slowest[model].items()),
                           key=lambda x: -x[1])[:SLOWEST],
            gallery_faces=args.faces, build=builds[model], threads=threads[model],
        ))
    return {
        "faces": args.faces, "probes": [name for name, _ in photos], "rounds": args.rounds,
        "cpu_count": os.cpu_count(), "code": code_state(str(REPO)),
        "other_processes_cores": round(others / wall, 2) if wall else 0.0,
        "target_p50_ms": TARGET_P50_MS,
        "results": [asdict(r) for r in results],
    }


def print_report(summary: dict[str, Any]) -> None:
    results = summary["results"]
    first = results[0]
    code = summary["code"]
    print(f"gallery: {summary['faces']:,} faces per model; {len(summary['probes'])} probe photos "
          f"x {summary['rounds']} rounds; cpu_count {summary['cpu_count']}; code "
          f"{code['commit']}, src {code['src_sha256']}")
    print(f"{'model':<14}{'threads':>8}{'searches':>9}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}"
          f"{'p50 / ' + first['model']:>22}")
    for r in results:
        print(f"{r['model']:<14}{r['threads']:>8}{r['searches']:>9}{r['p50_ms']:>9.1f}"
              f"{r['p99_ms']:>9.1f}{r['mean_ms']:>9.1f}{r['p50_ms'] / first['p50_ms']:>21.2f}x")
    print()
    print("breakdown, ms (p50 of each stage / mean of each stage; means add up to the mean)")
    print(f"{'stage':<28}" + "".join(f"{r['model']:>22}" for r in results))
    for stage in STAGES:
        print(f"{stage:<28}" + "".join(
            f"{r['stage_p50_ms'][stage]:>12.2f} / {r['stage_mean_ms'][stage]:>7.2f}"
            for r in results))
    print()
    for r in results:
        b = r["build"]
        print(f"{r['model']}: gallery written through the store in {b['store_seconds']} s, "
              f"indexed in {b['index_seconds']} s ({b['real_descriptors']} real descriptors "
              f"tiled); {r['no_face']} searches found no face")
        print("  slowest probes: " + ", ".join(f"{n} {t:.0f} ms ({f} faces)"
                                               for n, t, f in r["slowest"]))
        if r["model"] == "yunet-sface":
            verdict = "met" if r["p50_ms"] <= summary["target_p50_ms"] else "MISSED"
            print(f"target p50 <= {summary['target_p50_ms']:g} ms: {verdict} "
                  f"({r['p50_ms']:.1f} ms)")
    print(f"other processes' load while timing (cores): {summary['other_processes_cores']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=100_000, help="gallery size per model")
    parser.add_argument("--models", default="yunet-sface,dlib",
                        help="face models, the first is the ratios' reference "
                        "(default: %(default)s)")
    parser.add_argument("--probes", type=int, default=64,
                        help="probe photos per round, at least 50 (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="searches of every probe per model (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help="ONNX Runtime threads of the models (FACETRAIL_DESCRIPTOR_THREADS; "
                        "default 0: facetrail's choice)")
    parser.add_argument("--per-image", type=int, default=100, help="faces per synthetic image")
    parser.add_argument("--sigma", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="photos whose descriptors seed the galleries")
    parser.add_argument("--refresh", action="store_true",
                        help="compute the descriptors again instead of reading bench/results/ "
                        "(the cache is keyed by model and folder, not by facetrail's code)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.probes < 50:
        raise SystemExit("--probes must be at least 50")
    summary = run(args)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print_report(summary)


if __name__ == "__main__":
    main()
