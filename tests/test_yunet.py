"""YuNet detector: the real shipped model on real fixture photos.

The reference faces are OpenCV 5.0's ``cv2.FaceDetectorYN`` on the same file (input size =
the photo's size, score threshold 0.6, NMS 0.3), rounded to 0.1 px.
"""

from __future__ import annotations

import itertools
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facetrail.errors import ConfigError
from facetrail.faces import shipped, yunet
from facetrail.faces.base import Detection
from facetrail.faces.yunet import DEFAULT_SCORE_THRESHOLD, YuNetDetector

FACES = Path(__file__).parent / "data" / "faces"
OPENCV = {  # box (x, y, w, h), landmarks, score
    "group/kit_with_rose.jpg": [
        ((71.8, 98.2, 70.7, 94.7),
         ((89.7, 138.9), (123.7, 137.9), (108.6, 157.3), (95.0, 169.6), (124.2, 169.2)), 0.933),
        ((240.6, 76.7, 80.7, 107.1),
         ((255.5, 115.6), (293.8, 115.0), (270.7, 137.4), (257.9, 155.4), (290.3, 153.3)),
         0.923),
    ],
    "group/two_people.jpg": [
        ((136.4, 16.6, 81.5, 112.8),
         ((164.6, 55.3), (205.1, 56.4), (188.3, 77.1), (164.8, 95.0), (199.4, 96.1)), 0.927),
        ((447.5, 28.6, 84.3, 117.2),
         ((476.5, 76.6), (514.6, 76.8), (497.9, 102.4), (478.4, 116.4), (508.6, 117.0)),
         0.921),
    ],
}


def pixels(name: str | Path) -> np.ndarray:
    with Image.open(FACES / name) as image:
        return np.asarray(image.convert("RGB"))


def photos(folder: str) -> list[Path]:
    return sorted(p for p in (FACES / folder).rglob("*") if p.suffix in (".jpg", ".png"))


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    model = YuNetDetector()
    model.load()
    return model


def test_info_and_nothing_read_before_load(tmp_path: Path) -> None:
    info = YuNetDetector().info
    assert (info.name, info.version, info.landmarks) == (
        "yunet", shipped.DIGESTS[shipped.YUNET][:16], "five")
    assert YuNetDetector(score_threshold=0.5).score_threshold == 0.5
    # Construction reads nothing: a missing file fails only at load.
    missing = YuNetDetector(tmp_path / "missing.onnx", "0" * 64, name="user-x")
    assert missing.info.key == "user-x@" + "0" * 16
    with pytest.raises(ConfigError, match="cannot read"):
        missing.load()
    with pytest.raises(ConfigError):
        YuNetDetector(threads=0)
    with pytest.raises(ConfigError):
        YuNetDetector(score_threshold=1.5)


@pytest.mark.parametrize("name", sorted(OPENCV))
def test_one_network_call_is_opencvs(detector: YuNetDetector, name: str) -> None:
    rows = detector.run_network(pixels(name))
    expected = sorted(OPENCV[name])
    got = sorted(rows.tolist())
    assert len(got) == len(expected)
    for row, (box, marks, score) in zip(got, expected, strict=True):
        assert row[0:4] == pytest.approx(box, abs=0.051)
        assert row[4:14] == pytest.approx([v for p in marks for v in p], abs=0.051)
        assert row[14] == pytest.approx(score, abs=0.0006)


@pytest.mark.parametrize("name", sorted(OPENCV))
def test_known_faces_through_the_pyramid(detector: YuNetDetector, name: str) -> None:
    found = detector.detect_pixels(pixels(name))
    assert len(found) == 2
    assert [f.score for f in found] == sorted((f.score for f in found), reverse=True)
    for box, _, _ in OPENCV[name]:
        best = max(found, key=lambda f: iou(f.box, box))
        assert best.box == pytest.approx(box, abs=2.0)


def test_every_people_photo_has_a_face(detector: YuNetDetector) -> None:
    people = photos("people")
    assert len(people) > 200
    empty = [p.name for p in people if not detector.detect_pixels(pixels(p))]
    assert empty == []


def test_no_face_in_noface_photos(detector: YuNetDetector) -> None:
    assert detector.score_threshold == DEFAULT_SCORE_THRESHOLD
    for path in photos("noface"):
        assert detector.detect_pixels(pixels(path)) == [], path.name


def test_a_face_filling_a_large_image(detector: YuNetDetector) -> None:
    """Obama's face cropped tight and upscaled to 1200x1200: too large for one network call
    at full size (OpenCV's way: parts of the face at most), found whole by the coarse level."""
    x, y, w, h = OPENCV_OBAMA_BOX
    side = max(w, h) * 1.1
    cx, cy = x + w / 2, y + h / 2
    crop = Image.fromarray(pixels("people/Barack_Obama/Barack_Obama_0001.jpg")).crop(
        (int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
    big = np.asarray(crop.resize((1200, 1200), Image.Resampling.BICUBIC))
    assert all(row[3] < 800 for row in detector.run_network(big))
    found = detector.detect_pixels(big)
    assert len(found) == 1
    fx, fy, fw, fh = found[0].box
    assert fh > 900 and fw > 700
    assert abs(fx + fw / 2 - 600) < 120 and abs(fy + fh / 2 - 600) < 150


OPENCV_OBAMA_BOX = (207.9, 51.0, 136.0, 186.1)


def test_tiny_faces_in_a_crowd(detector: YuNetDetector) -> None:
    """ultralight_8.jpg (490x353) shows about 70 faces of 10-20 px."""
    found = detector.detect_pixels(pixels("group/ultralight_8.jpg"))
    assert len(found) >= 60
    assert max(max(f.box[2], f.box[3]) for f in found) < 40
    boxes = [f.box for f in found]
    assert all(iou(a, b) <= 0.3 for i, a in enumerate(boxes) for b in boxes[i + 1:])


def landmarks_in_order(face: Detection) -> bool:
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = face.landmarks
    x, y, w, h = face.box
    inside = all(x <= px <= x + w and y <= py <= y + h for px, py in face.landmarks)
    return (inside and lex < rex and lmx < rmx and max(ley, rey) < ny < min(lmy, rmy)
            and lex < nx < rex)


def test_landmarks_inside_their_boxes_in_order(detector: YuNetDetector) -> None:
    faces = [f for name in (*OPENCV, "people/Barack_Obama/Barack_Obama_0002.jpg",
                            "unknown/skimage_astronaut.jpg")
             for f in detector.detect_pixels(pixels(name))]
    assert len(faces) == 6
    assert all(landmarks_in_order(f) for f in faces)


def test_a_large_photo_is_shrunk_to_the_pixel_cap(detector: YuNetDetector) -> None:
    """A 4000x3000 photo (two_people.jpg upscaled x6.25) runs at most MAX_PIXELS at its
    finest level, as 1024 px tiles, and its boxes come back in its own pixels."""
    levels = yunet.plan(4000, 3000)
    assert levels[0].pixels <= yunet.MAX_PIXELS
    assert max(levels[-1].width, levels[-1].height) == yunet.COARSE_SIDE
    assert all(a.scale / b.scale <= yunet.LEVEL_STEP + 1e-9
               for a, b in itertools.pairwise(levels))
    assert yunet.min_face(4000, 3000) == pytest.approx(20 / math.sqrt(4e6 / 12e6))
    big = np.asarray(Image.fromarray(pixels("group/two_people.jpg")).resize((4000, 2350)))
    found = detector.detect_pixels(big)
    assert len(found) == 2
    for box, _, _ in OPENCV["group/two_people.jpg"]:
        assert max(iou(f.box, tuple(v * 6.25 for v in box)) for f in found) > 0.8


def test_tiles_own_every_face_once() -> None:
    for length in (1000, 1100, 1633, 2449, 4000):
        cuts = {c[0] for c in yunet._tiles(length, 10)}
        assert max(c[3] for c in cuts) <= yunet.TILE
        for point in np.linspace(0, length - 1, 997):
            owners = [c for c in cuts if c[1] <= point < c[2]]
            assert len(owners) == 1
            start, lo, hi, size = owners[0]
            # A face up to OVERLAP px centred here lies inside its tile (or the image edge).
            assert point - yunet.OVERLAP / 2 >= start or start == 0
            assert point + yunet.OVERLAP / 2 <= start + size or start + size >= length


def test_decode_follows_opencv() -> None:
    """One confident cell per stride of a 64x32 input, decoded as face_detect.cpp does."""
    pad_h, pad_w = 32, 64
    outputs = []
    cells = {8: 9, 16: 2, 32: 1}  # cell index: row = idx // cols, col = idx % cols
    for kind in ("cls", "obj", "bbox", "kps"):
        for stride in yunet.STRIDES:
            n = (pad_h // stride) * (pad_w // stride)
            width = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}[kind]
            out = np.zeros((1, n, width), np.float32)
            if kind in ("cls", "obj"):
                out[0, cells[stride], 0] = 1.2 if kind == "cls" else 0.81  # cls clamps to 1
            elif kind == "bbox":
                out[0, cells[stride]] = (0.5, 0.25, math.log(2.0), 0.0)
            else:
                out[0, cells[stride]] = np.arange(10, dtype=np.float32) / 10
            outputs.append(out)
    rows = yunet.decode(outputs, pad_h, pad_w, 0.5)
    assert rows.shape == (3, 15)
    for row, stride in zip(rows, yunet.STRIDES, strict=True):
        cols = pad_w // stride
        col, r = cells[stride] % cols, cells[stride] // cols
        cx, cy, w, h = (col + 0.5) * stride, (r + 0.25) * stride, 2.0 * stride, 1.0 * stride
        assert row[:4] == pytest.approx((cx - w / 2, cy - h / 2, w, h))
        marks = [((col + k / 10) if k % 2 == 0 else (r + k / 10)) * stride for k in range(10)]
        assert row[4:14] == pytest.approx(marks)
        assert row[14] == pytest.approx(0.9)


def test_a_damaged_model_is_refused(tmp_path: Path) -> None:
    damaged = tmp_path / "yunet.onnx"
    shutil.copy(shipped.path(shipped.YUNET), damaged)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="damaged"):
        YuNetDetector(damaged, shipped.DIGESTS[shipped.YUNET]).load()


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    import hashlib

    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"this is not an ONNX model\n" * 10)
    digest = hashlib.sha256(fake.read_bytes()).hexdigest()
    with pytest.raises(ConfigError, match="not an ONNX model|not YuNet-shaped"):
        YuNetDetector(fake, digest).load()


def test_an_onnx_model_that_is_not_yunet_is_refused() -> None:
    sface = shipped.path(shipped.SFACE)
    with pytest.raises(ConfigError, match="not YuNet-shaped"):
        YuNetDetector(sface, shipped.DIGESTS[shipped.SFACE]).load()
