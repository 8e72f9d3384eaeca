"""Detection: facetrail's YuNet detector against face_recognition's HOG, image by image.

Run from the repository root (needs the onnx extra and the bench extra, face_recognition):

    .venv/bin/python bench/detection.py [--data DIR] [--sheet PNG] [--threshold T] [--json]
    .venv/bin/python bench/detection.py --study [--data DIR]    # YuNet's tables, ~4 min

Every image under ``--data`` (faces-small by default, else ``tests/data/faces``) is decoded as
ingest decodes it and given to both detectors, one thread each, in this process:

- YuNet: ``facetrail.faces.yunet.YuNetDetector`` with its defaults (input pyramid, score
  threshold ``DEFAULT_SCORE_THRESHOLD`` unless ``--threshold``);
- HOG: ``face_recognition.face_locations(pixels, number_of_times_to_upsample=1)``, the
  project's baseline (dlib's HOG on the image upsampled x2, faces down to ~40 px).

The two detectors draw different boxes around the same face (YuNet's runs from the hairline
to the chin, HOG's is a square from the eyebrows to the lip), so a pair of boxes counts as the
same face at IoU >= 0.4 (``MATCH_IOU``), matched one to one, best IoU first; the median IoU of
the matched pairs is printed. Per category (the first folder under ``--data``): faces each
found, matched, found by one only, and ms per image of each with their ratio. The ms are
CPU time of this process (each detector computes on one thread), which other jobs on a shared
machine distort less than wall time; the cores those jobs used meanwhile are printed too.

The faces only one detector found are cut out (box plus a quarter of its side on every side),
labelled with the image, the box side in pixels and the score (YuNet) and written as one PNG
contact sheet to ``--sheet``, so that false detections can be counted by eye: a section per
detector and category, lowest YuNet score first.

``--study`` measures YuNet alone and prints the three tables of ``facetrail/faces/yunet.py``'s
docstring: cost and smallest face by image size (group/ultralight_25.jpg resized), what each
pyramid level buys (faces found and CPU ms per image for several pyramids, on ``--data`` and on
*closeup*: the largest face of each people/ photo cropped and upscaled to 1200x1200), and the
faces found at score thresholds 0.5-0.9.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from _machine import system_busy_seconds

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data" / "faces-small"
DEFAULT_DATA = SHARED_DATA if SHARED_DATA.is_dir() else REPO / "tests" / "data" / "faces"
DEFAULT_SHEET = Path("/tmp/facetrail-detection-sheet.png")
MATCH_IOU = 0.4
CATEGORIES = ("people", "group", "unknown", "noface", "edge_cases")
CROP = 80
"""Side of a crop on the sheet, in pixels."""
COLUMNS = 14

Box = tuple[float, float, float, float]
"""(x, y, w, h) in pixels."""


@dataclass
class Tally:
    images: int = 0
    yunet: int = 0
    hog: int = 0
    matched: int = 0
    yunet_seconds: float = 0.0
    hog_seconds: float = 0.0
    ious: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Crop:
    detector: str
    category: str
    path: Path
    box: Box
    score: float | None


def iou(a: Box, b: Box) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def match(first: list[Box], second: list[Box]) -> list[tuple[int, int, float]]:
    """One-to-one pairs (i, j, IoU) with IoU >= ``MATCH_IOU``, best IoU first."""
    pairs = sorted(
        ((iou(a, b), i, j) for i, a in enumerate(first) for j, b in enumerate(second)),
        reverse=True,
    )
    used_i: set[int] = set()
    used_j: set[int] = set()
    out = []
    for overlap, i, j in pairs:
        if overlap < MATCH_IOU:
            break
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            out.append((i, j, overlap))
    return out


def category(path: Path, data: Path) -> str:
    parts = path.relative_to(data).parts
    return parts[0] if len(parts) > 1 else "."


def run(data: Path, threshold: float | None) -> tuple[dict[str, Any], list[Crop]]:
    import face_recognition

    from facetrail import imaging
    from facetrail.faces.yunet import DEFAULT_SCORE_THRESHOLD, YuNetDetector
    from facetrail.settings import load_settings
    from facetrail.sources.base import IMAGE_SUFFIXES

    settings = load_settings(Path("/nonexistent-home"))
    threshold = DEFAULT_SCORE_THRESHOLD if threshold is None else threshold
    yunet = YuNetDetector(score_threshold=threshold, threads=1)
    paths = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"no image under {data}")
    tallies: dict[str, Tally] = defaultdict(Tally)
    crops: list[Crop] = []
    warm = imaging.decode(paths[0].read_bytes(), settings)
    yunet.detect(warm)  # loads the model; the first calls also allocate
    face_recognition.face_locations(warm.pixels, number_of_times_to_upsample=1)
    busy0, own0, wall0 = system_busy_seconds(), time.process_time(), time.perf_counter()
    for path in paths:
        image = imaging.decode(path.read_bytes(), settings)
        started = time.process_time()
        found = yunet.detect(image)
        yunet_seconds = time.process_time() - started
        started = time.process_time()
        locations = face_recognition.face_locations(image.pixels, number_of_times_to_upsample=1)
        hog_seconds = time.process_time() - started
        y_boxes = [d.box for d in found]
        h_boxes: list[Box] = [(left, top, right - left, bottom - top)
                              for top, right, bottom, left in locations]
        pairs = match(y_boxes, h_boxes)
        cat = category(path, data)
        tally = tallies[cat]
        tally.images += 1
        tally.yunet += len(y_boxes)
        tally.hog += len(h_boxes)
        tally.matched += len(pairs)
        tally.yunet_seconds += yunet_seconds
        tally.hog_seconds += hog_seconds
        tally.ious.extend(p[2] for p in pairs)
        y_matched = {i for i, _, _ in pairs}
        h_matched = {j for _, j, _ in pairs}
        crops.extend(Crop("YuNet", cat, path, d.box, d.score)
                     for i, d in enumerate(found) if i not in y_matched)
        crops.extend(Crop("HOG", cat, path, b, None)
                     for j, b in enumerate(h_boxes) if j not in h_matched)
    wall = time.perf_counter() - wall0
    other = max(0.0, system_busy_seconds() - busy0 - (time.process_time() - own0)) / wall
    order = [c for c in CATEGORIES if c in tallies] + sorted(set(tallies) - set(CATEGORIES))
    rows = [_row(cat, tallies[cat]) for cat in order]
    total = Tally()
    for t in tallies.values():
        total.images += t.images
        total.yunet += t.yunet
        total.hog += t.hog
        total.matched += t.matched
        total.yunet_seconds += t.yunet_seconds
        total.hog_seconds += t.hog_seconds
        total.ious.extend(t.ious)
    result = {
        "data": str(data),
        "threshold": threshold,
        "match_iou": MATCH_IOU,
        "median_matched_iou": round(statistics.median(total.ious), 3) if total.ious else None,
        "other_processes_cores": round(other, 2),
        "categories": rows,
        "total": _row("all", total),
    }
    return result, crops


def _row(name: str, t: Tally) -> dict[str, Any]:
    y_ms = 1000 * t.yunet_seconds / max(t.images, 1)
    h_ms = 1000 * t.hog_seconds / max(t.images, 1)
    return {
        "category": name, "images": t.images, "yunet_faces": t.yunet, "hog_faces": t.hog,
        "matched": t.matched, "yunet_only": t.yunet - t.matched, "hog_only": t.hog - t.matched,
        "yunet_ms": round(y_ms, 1), "hog_ms": round(h_ms, 1),
        "hog_over_yunet": round(h_ms / y_ms, 1) if y_ms else None,
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"data: {result['data']}; YuNet score >= {result['threshold']}; same face at IoU >= "
          f"{result['match_iou']} (median IoU of matched pairs "
          f"{result['median_matched_iou']}); other processes used "
          f"{result['other_processes_cores']} cores meanwhile")
    head = ("category", "images", "YuNet", "HOG", "matched", "YuNet only", "HOG only",
            "YuNet ms/img", "HOG ms/img", "HOG/YuNet")
    keys = ("category", "images", "yunet_faces", "hog_faces", "matched", "yunet_only",
            "hog_only", "yunet_ms", "hog_ms", "hog_over_yunet")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in [*result["categories"], result["total"]]:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


def contact_sheet(crops: list[Crop], dest: Path) -> int:
    """Write the crops as one labelled PNG; the number of crops."""
    sections: dict[tuple[str, str], list[Crop]] = defaultdict(list)
    for crop in crops:
        sections[(crop.detector, crop.category)].append(crop)
    cell_h = CROP + 24
    height = 0
    layout = []
    for key in sorted(sections, key=lambda k: (k[0] != "YuNet", _cat_order(k[1]))):
        items = sorted(sections[key], key=lambda c: (c.score or 0.0, str(c.path)))
        rows = -(-len(items) // COLUMNS)
        layout.append((key, items, height))
        height += 18 + rows * cell_h
    width = COLUMNS * (CROP + 8)
    sheet = Image.new("RGB", (width, max(height, 1)), "white")
    draw = ImageDraw.Draw(sheet)
    opened: dict[Path, Image.Image] = {}
    for (detector, cat), items, top in layout:
        draw.text((4, top + 3), f"{detector} only, {cat}: {len(items)}", fill="blue")
        for n, crop in enumerate(items):
            x = (n % COLUMNS) * (CROP + 8) + 4
            y = top + 18 + (n // COLUMNS) * cell_h
            if crop.path not in opened:
                with Image.open(crop.path) as source:
                    opened[crop.path] = source.convert("RGB")
            bx, by, bw, bh = crop.box
            margin = max(bw, bh) / 4
            cut = opened[crop.path].crop((int(bx - margin), int(by - margin),
                                          int(bx + bw + margin), int(by + bh + margin)))
            sheet.paste(cut.resize((CROP, CROP), Image.Resampling.BILINEAR), (x, y))
            draw.text((x, y + CROP + 1), crop.path.stem[:13], fill="black")
            label = f"{max(bw, bh):.0f}px" + (f" {crop.score:.2f}" if crop.score else "")
            draw.text((x, y + CROP + 11), label, fill="red")
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest)
    return len(crops)


def _cat_order(cat: str) -> int:
    return CATEGORIES.index(cat) if cat in CATEGORIES else len(CATEGORIES)


STUDY_PYRAMIDS = {  # name: (max_upscale, coarse_side)
    "native only (OpenCV's way)": (1.0, 10**9),
    "x1.5 only": (1.5, 10**9),
    "native + coarse": (1.0, 640),
    "**x1.5 + coarse**": (1.5, 640),
    "x2 + coarse": (2.0, 640),
}
STUDY_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
STUDY_SIZES = ((250, 250), (640, 480), (1024, 768), (1920, 1080), (2448, 1632), (4032, 3024),
               (6000, 4000))


def closeup(pixels: Any, detector: Any) -> Any:
    """The largest face of ``pixels`` (one network call at full size) cropped to 1.15 x its box
    and upscaled to 1200x1200, or None when there is no face."""
    rows = detector.run_network(pixels)
    if not len(rows):
        return None
    x, y, w, h = rows[(rows[:, 2] * rows[:, 3] * rows[:, 14]).argmax()][:4]
    side, cx, cy = max(w, h) * 1.15, x + w / 2, y + h / 2
    crop = Image.fromarray(pixels).crop((int(cx - side / 2), int(cy - side / 2),
                                         int(cx + side / 2), int(cy + side / 2)))
    return np.asarray(crop.resize((1200, 1200), Image.Resampling.BICUBIC))


def study(data: Path) -> None:
    from facetrail import imaging
    from facetrail.faces import yunet
    from facetrail.settings import load_settings
    from facetrail.sources.base import IMAGE_SUFFIXES

    settings = load_settings(Path("/nonexistent-home"))
    low = _loaded_yunet(min(STUDY_THRESHOLDS))
    busy0, own0, wall0 = system_busy_seconds(), time.process_time(), time.perf_counter()

    crowd = data / "group" / "ultralight_25.jpg"
    if crowd.is_file():
        print("| image | levels | px run | smallest face | CPU ms |\n|---|---|---|---|---|")
        source = Image.open(crowd).convert("RGB")
        for w, h in STUDY_SIZES:
            pixels = np.asarray(source.resize((w, h)))
            levels = yunet.plan(w, h)
            tiles = [yunet._tiles(lv.width, lv.height, math.isfinite(lv.gate)) for lv in levels]
            run = sum(x[3] * y[3] for t in tiles for x, y in t)
            low.detect_pixels(pixels)
            best = min(_cpu(lambda p=pixels: low.detect_pixels(p))[0] for _ in range(3))
            desc = " + ".join(f"{lv.width}x{lv.height}" + (f" ({len(t)} tiles)" if len(t) > 1
                                                             else "")
                              for lv, t in zip(levels, tiles, strict=True))
            print(f"| {w}x{h} | {desc} | {run / 1e6:.2f} M | {yunet.min_face(w, h):.0f} px | "
                  f"{1000 * best:.0f} |")
        print()

    paths = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    images: list[tuple[str, Any]] = []
    for path in paths:
        pixels = imaging.decode(path.read_bytes(), settings).pixels
        images.append((category(path, data), pixels))
    images += [("closeup", c) for cat, p in list(images) if cat == "people"
               for c in [closeup(p, low)] if c is not None]
    found: dict[str, list[tuple[str, list[float], float]]] = {}
    for name, (upscale, coarse) in STUDY_PYRAMIDS.items():
        found[name] = []
        for cat, pixels in images:
            h, w = pixels.shape[:2]
            levels = yunet.plan(w, h, yunet.MAX_PIXELS, upscale, coarse)
            seconds, faces = _cpu(lambda p=pixels, lv=levels: low.detect_pixels(p, lv))
            found[name].append((cat, [f.score for f in faces], seconds))
    default = yunet.DEFAULT_SCORE_THRESHOLD

    def count(rows: list[tuple[str, list[float], float]], cats: tuple[str, ...],
              t: float = default) -> int:
        return sum(sum(s >= t for s in scores) for c, scores, _ in rows if c in cats)

    def empty(rows: list[tuple[str, list[float], float]], cat: str, t: float = default) -> int:
        return sum(not any(s >= t for s in scores) for c, scores, _ in rows if c == cat)

    def ms(rows: list[tuple[str, list[float], float]], cats: tuple[str, ...]) -> str:
        chosen = [sec for c, _, sec in rows if c in cats]
        return f"{1000 * sum(chosen) / max(len(chosen), 1):.1f}"

    print("| levels | people | group | unk+edge | noface | closeup | "
          "ms: people/group/closeup/all |\n|---|---|---|---|---|---|---|")
    for name, rows in found.items():
        real = tuple(c for c in {c for c, _ in images} if c != "closeup")
        print(f"| {name} | {count(rows, ('people',))} ({empty(rows, 'people')}) | "
              f"{count(rows, ('group',))} | {count(rows, ('unknown', 'edge_cases'))} | "
              f"{count(rows, ('noface',))} | {empty(rows, 'closeup')} "
              f"({count(rows, ('closeup',))}) | {ms(rows, ('people',))} / "
              f"{ms(rows, ('group',))} / {ms(rows, ('closeup',))} / {ms(rows, real)} |")
    print()
    rows = found["**x1.5 + coarse**"]
    print("| threshold | people | group | unknown | edge | noface | closeup | people with none |"
          "\n|---|---|---|---|---|---|---|---|")
    for t in STUDY_THRESHOLDS:
        print(f"| {t} | {count(rows, ('people',), t)} | {count(rows, ('group',), t)} | "
              f"{count(rows, ('unknown',), t)} | {count(rows, ('edge_cases',), t)} | "
              f"{count(rows, ('noface',), t)} | {empty(rows, 'closeup', t)} | "
              f"{empty(rows, 'people', t)} |")
    wall = time.perf_counter() - wall0
    other = max(0.0, system_busy_seconds() - busy0 - (time.process_time() - own0)) / wall
    print(f"\nother processes used {other:.2f} cores meanwhile")


def _loaded_yunet(threshold: float) -> Any:
    from facetrail.faces.yunet import YuNetDetector

    detector = YuNetDetector(score_threshold=threshold, threads=1)
    detector.load()
    return detector


def _cpu(call: Any) -> tuple[float, Any]:
    started = time.process_time()
    result = call()
    return time.process_time() - started, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sheet", type=Path, default=DEFAULT_SHEET,
                        help=f"contact sheet PNG (default {DEFAULT_SHEET})")
    parser.add_argument("--threshold", type=float, default=None,
                        help="YuNet score threshold (default: the detector's)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--study", action="store_true",
                        help="print the level, threshold and size tables of YuNet instead")
    args = parser.parse_args(argv)
    if args.study:
        study(args.data)
        return
    result, crops = run(args.data, args.threshold)
    result["sheet"] = str(args.sheet)
    result["sheet_crops"] = contact_sheet(crops, args.sheet)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print_table(result)
        print(f"contact sheet of the {result['sheet_crops']} faces found by one detector only: "
              f"{args.sheet}")


if __name__ == "__main__":
    main()
