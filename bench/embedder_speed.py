"""Embedder speed: ms per face of SFace on ONNX Runtime, shipped graph vs the derived one.

Run from the repository root (the onnx extra must be installed):

    .venv/bin/python bench/embedder_speed.py [--data DIR] [--faces 32] [--rounds 5] [--json]

The chips are real: faces found in ``--data`` (faces-small by default) by YuNet and aligned by
``faces/align.py`` to the 112 px ArcFace template, the input SFace gets during ingest. Every
configuration embeds the same ``--faces`` chips:

- ``shipped``: the int8 block-quantised file as shipped (batch fixed at 1), on 1 and 2 threads;
- ``folded``: its DequantizeLinear and weight Reshape nodes folded into float32 initialisers,
  PRelu left as it is (1 thread, batch 1);
- ``derived``: what ``SFaceEmbedder.load`` runs (folded, PRelu rewritten, symbolic batch) at
  ONNX Runtime's graph optimisation levels basic / extended / all, batch 1, 8 and 32 (2, 4 at
  level all), on 1 and 2 intra-op threads;
- ``dlib-onnx``: facetrail's ONNX conversion of dlib's ResNet (``OnnxDescriptor``), batch 1
  and 32, on 1 and 2 threads, the baseline. It gets 150 px chips warped from the same
  detections (its cost does not depend on how a chip was aligned).

The configurations run in rounds, in a new shuffled order every round, so that a slow spell
of the shared machine hits all of them alike; the median round of each is reported, with its
speed-up over the shipped graph (1 thread) and its cost relative to dlib-onnx (1 thread,
batch 1), both measured in the same process. The load time of the embedder (verify the file,
derive the graph, open the session) is measured against loading a derived graph cached on
disk. The largest difference between derived and shipped outputs is printed too, as is the
load other processes put on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from _machine import system_busy_seconds

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces-small"
Embed = Callable[[Sequence[np.ndarray]], np.ndarray]
LEVELS = ("basic", "extended", "all")


def collect_chips(data: Path, wanted: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Up to ``wanted`` SFace chips (112 px) of faces YuNet finds under ``data``, and 150 px
    chips of the same faces for the dlib descriptor."""
    from facetrail.faces import align
    from facetrail.faces.yunet import YuNetDetector
    from facetrail.imaging import decode
    from facetrail.settings import Settings

    settings = Settings(home=Path(tempfile.gettempdir()))
    detector = YuNetDetector()
    sface_chips: list[np.ndarray] = []
    dlib_chips: list[np.ndarray] = []
    for path in sorted(data.rglob("*")):
        if len(sface_chips) >= wanted:
            break
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        image = decode(path.read_bytes(), settings)
        for face in detector.detect(image):
            sface_chips.append(align.warp(image.pixels, align.similarity(face.landmarks), 112))
            wide = align.similarity(face.landmarks, align.ARCFACE_112 * (150 / 112))
            dlib_chips.append(align.warp(image.pixels, wide, 150))
    return sface_chips[:wanted], dlib_chips[:wanted]


def session(model: bytes | str, threads: int, level: str) -> Any:
    import onnxruntime as ort

    from facetrail.faces.onnx_session import session_options

    options = session_options(threads)
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def runner(sess: Any) -> Embed:
    """Raw ``fc1`` of chips, in one call of the session."""
    from facetrail.faces import sface

    def embed(chips: Sequence[np.ndarray]) -> np.ndarray:
        out: np.ndarray = sess.run([sface.OUTPUT], {sface.INPUT: sface.to_blob(np.stack(chips))})[0]
        return out

    return embed


def timed(embed: Embed, chips: list[np.ndarray], batch: int) -> tuple[float, np.ndarray]:
    """Seconds to embed every chip, ``batch`` chips per call; and the vectors."""
    out = []
    started = time.perf_counter()
    for start in range(0, len(chips), batch):
        out.append(embed(chips[start : start + batch]))
    return time.perf_counter() - started, np.concatenate(out)


def load_times(rounds: int, models: Path) -> dict[str, float]:
    """Median seconds of the ways to get a ready SFace session (the OS file cache warm)."""
    import onnx

    from facetrail.faces import sface, shipped
    from facetrail.faces.cache import write_atomically

    digest = shipped.DIGESTS[shipped.SFACE]
    cached = models / f"sface_{digest[:12]}_derived.onnx"
    started = time.perf_counter()
    derived = sface.derive(onnx.load_from_string(shipped.read(shipped.SFACE))).SerializeToString()
    write_atomically(cached, lambda path: path.write_bytes(derived))
    first = time.perf_counter() - started

    def in_memory() -> None:
        data = shipped.read(shipped.SFACE)
        session(sface.derive(onnx.load_from_string(data)).SerializeToString(), 1, "all")

    def from_cache() -> None:
        shipped.read(shipped.SFACE)  # the shipped file is verified either way
        session(str(cached), 1, "all")

    def from_checked_cache() -> None:
        shipped.read(shipped.SFACE)
        data = cached.read_bytes()
        hashlib.sha256(data).hexdigest()  # what trusting no file on disk would cost
        session(data, 1, "all")

    def shipped_graph() -> None:
        session(shipped.read(shipped.SFACE), 1, "all")

    ways = {"derive in memory": in_memory, "derived graph cached on disk": from_cache,
            "cached on disk, its sha256 checked": from_checked_cache,
            "shipped graph as is": shipped_graph}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(rounds):
        for name, way in ways.items() if r % 2 == 0 else reversed(ways.items()):
            t0 = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - t0)
    result = {name: statistics.median(t) for name, t in times.items()}
    result["derive and write the cache (first load)"] = first
    return result


def run(data: Path, faces: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-models-") as models:
        return measure(data, faces, rounds, Path(models))


def measure(data: Path, faces: int, rounds: int, models: Path) -> dict[str, Any]:
    import onnx

    from facetrail.faces import sface, shipped
    from facetrail.faces.descriptor import OnnxDescriptor
    from facetrail.faces.dlib_backend import weights_path

    chips, dlib_chips = collect_chips(data, faces)
    if not chips:
        raise SystemExit(f"no face found under {data}")
    source = shipped.read(shipped.SFACE)
    folded_model = onnx.load_from_string(source)
    sface.fold(folded_model)
    folded = folded_model.SerializeToString()
    derived = sface.derive(onnx.load_from_string(source)).SerializeToString()

    configs: list[tuple[str, Embed, int, list[np.ndarray]]] = []
    for t in (1, 2):
        configs.append((f"shipped {t}t b1", runner(session(source, t, "all")), 1, chips))
    configs.append(("folded 1t b1", runner(session(folded, 1, "all")), 1, chips))
    for level in LEVELS:
        for t in (1, 2):
            embed = runner(session(derived, t, level))
            batches = (1, 2, 4, 8, 32) if level == "all" else (1, 8, 32)
            configs += [(f"derived {level} {t}t b{b}", embed, b, chips) for b in batches]
    dat = weights_path("resnet")
    for t in (1, 2):
        describe = OnnxDescriptor(dat, models, threads=t).describe
        configs += [(f"dlib-onnx {t}t b{b}", describe, b, dlib_chips) for b in (1, 32)]

    for _, embed, batch, some in configs:  # warm-up: first calls allocate and pick kernels
        embed(some[:batch])
    seconds: dict[str, list[float]] = {name: [] for name, *_ in configs}
    vectors: dict[str, np.ndarray] = {}
    busy, wall = 0.0, 0.0
    order = list(range(len(configs)))
    shuffle = random.Random(0)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for i in order:
            name, embed, batch, some = configs[i]
            before, t0, own_before = system_busy_seconds(), time.perf_counter(), time.process_time()
            took, vectors[name] = timed(embed, some, batch)
            own = time.process_time() - own_before
            busy += max(0.0, system_busy_seconds() - before - own)
            wall += time.perf_counter() - t0
            seconds[name].append(took)
    ms = {name: 1000 * statistics.median(s) / len(chips) for name, s in seconds.items()}
    reference = vectors["shipped 1t b1"]
    rows = [
        {
            "config": name,
            "ms_per_face": round(ms[name], 2),
            "speedup_vs_shipped_1t": round(ms["shipped 1t b1"] / ms[name], 2),
            "cost_vs_dlib_onnx_1t_b1": round(ms[name] / ms["dlib-onnx 1t b1"], 2),
            "max_abs_diff_vs_shipped": (
                None if name.startswith("dlib") else float(np.abs(vectors[name] - reference).max())
            ),
        }
        for name, *_ in configs
    ]
    return {
        "data": str(data),
        "faces": len(chips),
        "rounds": rounds,
        "cpu_count": os.cpu_count(),
        "other_processes_cores": round(busy / wall, 2) if wall else 0.0,
        "results": rows,
        "load_seconds": {k: round(v, 3) for k, v in load_times(rounds, models).items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--faces", type=int, default=32, help="chips to embed (default 32)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} is not a folder")
    result = run(args.data.resolve(), args.faces, args.rounds)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"{result['faces']} faces from {result['data']}, median of {result['rounds']} rounds, "
          f"cpu_count {result['cpu_count']}")
    print(f"{'configuration':<26} {'ms/face':>8} {'vs shipped':>11} {'/ dlib-onnx':>12} "
          f"{'max |diff|':>11}")
    for row in result["results"]:
        diff = row["max_abs_diff_vs_shipped"]
        print(f"{row['config']:<26} {row['ms_per_face']:>8.2f} "
              f"{row['speedup_vs_shipped_1t']:>10.2f}x {row['cost_vs_dlib_onnx_1t_b1']:>11.2f}x "
              f"{'' if diff is None else f'{diff:.1e}':>11}")
    print("load time (verify, build, open a 1-thread session), median:")
    for name, value in result["load_seconds"].items():
        print(f"  {name:<40} {1000 * value:>7.0f} ms")
    print(f"other processes' load while timing (cores): {result['other_processes_cores']:.2f}")


if __name__ == "__main__":
    main()
