"""Detection downscaling: does the scanned grid (``FACETRAIL_DETECT_GRID``) cost recall?

Every image under a folder is analysed twice by facetrail's own analyser with the ``dlib``
face model (the grid is its detectors' setting), in this process:

1. default: the detection plan of ``faces/geometry.py`` (images over ``grid / 2`` px are
   scaled so that the scanned grid is ``grid`` px);
2. full resolution: a grid so large that every image is scanned at its own size, upsampled
   x2 (faces down to 40 px, as ``face_recognition``'s upsample=1).

Images up to ``grid / 2`` px get the same plan both ways and are counted, not re-run. Faces
are matched per image at IoU >= 0.5. Recall = full-resolution faces the default also finds.

    .venv/bin/python bench/detect_grid.py --data ../shared/data/faces-small
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from facetrail import imaging
from facetrail.faces import geometry
from facetrail.pipeline.analyze import Analyzer
from facetrail.records import Box
from facetrail.settings import load_settings
from facetrail.sources.base import IMAGE_SUFFIXES


def iou(a: Box, b: Box) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter) if inter else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("tests/data/faces"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # The grid is the dlib detectors' plan (YuNet has its own pyramid, faces/yunet.py).
    home = Path("/nonexistent-home")
    default = Analyzer(load_settings(home, face_model="dlib"))
    full = Analyzer(load_settings(home, face_model="dlib", detect_grid=1_000_000))
    grid = default.settings.detect_grid
    images = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    same_plan = 0
    rows: list[dict[str, Any]] = []
    if images:  # load the models before timing
        warm = images[0].read_bytes()
        default(warm, imaging.sha256_hex(warm))
        full(warm, imaging.sha256_hex(warm))
    for path in images:
        data = path.read_bytes()
        sha = imaging.sha256_hex(data)
        decoded = imaging.decode(data, default.settings, sha256=sha)
        plan = geometry.plan(decoded.width, decoded.height, grid)
        if plan.scale == 1.0:
            same_plan += 1
            continue
        t0 = time.perf_counter()
        small = default(data, sha).faces
        t1 = time.perf_counter()
        large = full(data, sha).faces
        t2 = time.perf_counter()
        found = sum(1 for f in large if any(iou(f.box, g.box) >= 0.5 for g in small))
        rows.append({
            "image": str(path.relative_to(args.data)),
            "size": [decoded.width, decoded.height],
            "min_face_px": round(plan.min_face_px, 1),
            "faces_full": len(large), "faces_default": len(small), "full_found_by_default": found,
            "missed_sides_px": [min(f.box[2:]) for f in large
                                if not any(iou(f.box, g.box) >= 0.5 for g in small)],
            "seconds_default": round(t1 - t0, 3), "seconds_full": round(t2 - t1, 3),
        })
    total_full = sum(r["faces_full"] for r in rows)
    summary = {
        "images": len(images), "images_with_the_same_plan": same_plan,
        "images_downscaled": len(rows), "grid": grid,
        "faces_full_resolution": total_full,
        "found_by_default": sum(r["full_found_by_default"] for r in rows),
        "recall": (sum(r["full_found_by_default"] for r in rows) / total_full
                   if total_full else None),
        "time_ratio_full_over_default": (
            sum(r["seconds_full"] for r in rows) / max(sum(r["seconds_default"] for r in rows),
                                                       1e-9) if rows else None),
        "per_image": rows,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{len(images)} images; {same_plan} up to {grid // 2} px are scanned identically")
    for r in rows:
        print(f"  {r['image']} {r['size']}: full {r['faces_full']} faces, default "
              f"{r['faces_default']} (finds {r['full_found_by_default']} of full's; min face "
              f"{r['min_face_px']} px; missed sides {r['missed_sides_px']}), "
              f"{r['seconds_default']}s vs {r['seconds_full']}s")
    if not rows:
        print("no image is downscaled: nothing to compare")
        return
    print(f"recall of the downscaled detection on downscaled images: {summary['recall']}; "
          f"full resolution costs {summary['time_ratio_full_over_default']:.2f}x the time")


if __name__ == "__main__":
    main()
