"""Rebuild tests/data from the full fixture set (not run by the tests).

    python tests/data/build_fixtures.py /path/to/shared/data

LFW crops are copied as they are; larger photos are downscaled to at most 640 px and saved
as JPEG (quality 90) so that the fixtures stay small.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
MAX_SIDE = 640
PICK = {
    "group": ["two_people.jpg", "kit_with_rose.jpg", "ultralight_8.jpg"],
    "unknown": ["lin-manuel-miranda.png", "skimage_astronaut.png", "skimage_camera.png",
                "ultralight_5.jpg"],
    "noface": ["skimage_chelsea.png", "skimage_coins.png"],
    "edge_cases": ["obama2_32bit_rgba.png"],
}
WARCS = ["flashfrozen-jwat-recompressed.warc.gz",
         "IAH-20080430204825-00000-blackbook-truncated.warc.gz"]


def shrink(src: Path, dst_dir: Path) -> None:
    dst_dir.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        small = max(im.size) <= MAX_SIDE and src.stat().st_size <= 60_000
        if small:
            shutil.copyfile(src, dst_dir / src.name)
            return
        if src.parent.name == "edge_cases" and im.mode == "RGBA":
            im.thumbnail((400, 400), Image.Resampling.LANCZOS)
            im.save(dst_dir / src.name, optimize=True)  # the alpha channel is the edge case
            return
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        im.convert("RGB").save(dst_dir / (src.stem + ".jpg"), quality=90)


def main(shared: Path) -> None:
    faces = shared / "faces-small"
    for person in sorted((faces / "people").iterdir()):
        for photo in sorted(person.iterdir()):
            shrink(photo, HERE / "faces" / "people" / person.name)
    for folder, names in PICK.items():
        for name in names:
            shrink(faces / folder / name, HERE / "faces" / folder)
    (HERE / "warc").mkdir(exist_ok=True)
    for name in WARCS:
        shutil.copyfile(shared / "warc" / "webarchive-discovery" / name, HERE / "warc" / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
