"""Descriptor speed: ms per face of dlib's ResNet and of the same network on ONNX Runtime.

Run from the repository root (the onnx extra must be installed):

    .venv/bin/python bench/descriptor_speed.py [--data DIR] [--faces 64] [--rounds 3] [--json]

The chips are real: faces found in ``--data`` (faces-small by default) by the ``dlib`` face
model's detector (``DlibDetector``) and aligned by its embedder (``DlibEmbedder.align``:
``dlib.get_face_chips``, 150 px, padding 0.25), the input both runtimes get during ingest.
Each configuration describes the same ``--faces`` chips:

- dlib ``compute_face_descriptor``, one chip per call (batch 1) and 32 per call; dlib-bin
  runs on one thread whatever the batch;
- ONNX Runtime, batch 1 and 32, on 1 and on 2 intra-op threads.

The configurations run in rounds, their order reversed every round, so that a slow spell of
the machine hits all of them; the best round of each is reported, with its ratio to dlib at
batch 1 measured in the same process. The maximum absolute difference between the ONNX and
the dlib descriptors of the same chips is printed too, as is the load other processes put on
the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
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
Describe = Callable[[Sequence[np.ndarray]], np.ndarray]


def collect_chips(data: Path, wanted: int, models: Path) -> list[np.ndarray]:
    """Up to ``wanted`` aligned chips of faces found in the images under ``data``."""
    from facetrail.faces import make_model
    from facetrail.imaging import decode
    from facetrail.settings import Settings

    settings = Settings(home=models.parent, face_model="dlib", descriptor_runtime="dlib")
    model = make_model("dlib", settings)
    chips: list[np.ndarray] = []
    for path in sorted(data.rglob("*")):
        if len(chips) >= wanted:
            break
        if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            image = decode(path.read_bytes(), settings)
            chips.extend(model.embedder.align(image.pixels, model.detector.detect(image)))
    return chips[:wanted]


def timed(describe: Describe, chips: list[np.ndarray], batch: int) -> tuple[float, np.ndarray]:
    """Seconds to describe every chip, ``batch`` chips per call; and the descriptors."""
    out = []
    started = time.perf_counter()
    for start in range(0, len(chips), batch):
        out.append(describe(chips[start : start + batch]))
    return time.perf_counter() - started, np.concatenate(out)


def run(data: Path, faces: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="facetrail-bench-models-") as home:
        return measure(data, faces, rounds, Path(home) / "models")


def measure(data: Path, faces: int, rounds: int, models: Path) -> dict[str, Any]:
    """The timings, with the derived model files (converted model, detector) in ``models``."""
    from facetrail.faces.descriptor import DlibDescriptor, OnnxDescriptor
    from facetrail.faces.dlib_backend import weights_path

    chips = collect_chips(data, faces, models)
    if not chips:
        raise SystemExit(f"no face found under {data}")
    dat = weights_path("resnet")
    started = time.perf_counter()
    onnx = {t: OnnxDescriptor(dat, models, threads=t) for t in (1, 2)}
    convert_seconds = time.perf_counter() - started
    dlib = DlibDescriptor(dat)
    configs: list[tuple[str, Describe, int]] = [
        ("dlib batch 1", dlib.describe, 1),
        ("dlib batch 32", dlib.describe, 32),
        *((f"onnx batch {b}, {t} thread{'s' * (t > 1)}", onnx[t].describe, b)
          for t in (1, 2) for b in (1, 32)),
    ]
    for _, describe, batch in configs:  # warm-up: first calls allocate and pick kernels
        describe(chips[:batch])
    best: dict[str, float] = {}
    vectors: dict[str, np.ndarray] = {}
    busy, wall = 0.0, 0.0
    for r in range(rounds):
        for name, describe, batch in configs if r % 2 == 0 else configs[::-1]:
            before, t0 = system_busy_seconds(), time.perf_counter()
            own_before = time.process_time()
            seconds, vectors[name] = timed(describe, chips, batch)
            own = time.process_time() - own_before
            busy += max(0.0, system_busy_seconds() - before - own)
            wall += time.perf_counter() - t0
            best[name] = min(best.get(name, float("inf")), seconds)
    reference = vectors["dlib batch 1"]
    base = best["dlib batch 1"] / len(chips)
    rows = [
        {
            "config": name,
            "ms_per_face": round(1000 * best[name] / len(chips), 3),
            "speedup_vs_dlib_batch1": round(base / (best[name] / len(chips)), 2),
            "max_abs_diff_vs_dlib": float(np.abs(vectors[name] - reference).max()),
        }
        for name, _, _ in configs
    ]
    return {
        "data": str(data),
        "faces": len(chips),
        "rounds": rounds,
        "cpu_count": os.cpu_count(),
        "convert_and_load_seconds": round(convert_seconds, 2),
        "other_processes_cores": round(busy / wall, 2) if wall else 0.0,
        "results": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--faces", type=int, default=64, help="chips to describe (default 64)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} is not a folder")
    result = run(args.data.resolve(), args.faces, args.rounds)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return
    print(f"{result['faces']} faces from {result['data']}, best of {result['rounds']} rounds, "
          f"cpu_count {result['cpu_count']}")
    print(f"{'configuration':<26} {'ms/face':>9} {'vs dlib b1':>11} {'max |diff|':>11}")
    for row in result["results"]:
        print(f"{row['config']:<26} {row['ms_per_face']:>9.2f} "
              f"{row['speedup_vs_dlib_batch1']:>10.1f}x {row['max_abs_diff_vs_dlib']:>11.1e}")
    print(f"conversion + session set-up (both thread counts): "
          f"{result['convert_and_load_seconds']:.2f} s")
    print(f"other processes' load while timing (cores): {result['other_processes_cores']:.2f}")


if __name__ == "__main__":
    main()
