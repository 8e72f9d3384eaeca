"""The YuNet face detector (OpenCV Zoo's ``face_detection_yunet_2023mar``) on ONNX Runtime.

One network call is OpenCV's ``FaceDetectorYN``: the image goes in as float32 NCHW **BGR**
with raw 0-255 values, padded right and bottom with zeros to multiples of 32; the outputs
(cls, obj, bbox, kps at strides 8, 16 and 32, one prior per cell) are decoded as
``face_detect.cpp`` does, score = sqrt(clamp(cls) x clamp(obj)), then NMS at IoU 0.3 on the
boxes truncated to whole pixels (OpenCV's ``Rect2i``). On the 473 fixture photos (faces-small
and tests/data), each at its own size, this gives OpenCV 5.0's faces exactly (2,044, 1,899 and
867 at score 0.5, 0.6 and 0.9; boxes and landmarks within 0.00025 px, scores within 1e-6).

Scales. At its input scale YuNet finds faces from about 16 px (half of them at score 0.6) or
20 px (nearly all) up to about 700 px; at ~1000 px it reports parts of the face instead. So
``detect`` runs an input pyramid (``plan``):

- the *fine* level: the image scaled by ``min(MAX_UPSCALE, sqrt(MAX_PIXELS / pixels))``
  (``MAX_UPSCALE`` is 1: images under 4 MP run at their own size, see below), and images over 4 MP
  are shrunk to 4 MP, the cap on the pixels run per image (with the tiles' overlap and the
  coarse level, under 6 M: table below). A fine level over ``TILE`` (1024) px on a side runs
  as overlapping tiles: the same faces as in one call (all but 7 of 1,334 on faces-small's
  group/ and edge_cases/), and a 12 MP photo peaks at 290 MB of memory, not 480 MB;
- *coarse* levels, each at most ``LEVEL_STEP`` (4x) smaller than the one before, down to one
  whose longest side is ``COARSE_SIDE`` (640) px, for faces that fill the photo; only when the
  fine level's longest side is over 800 px.

Every level but the coarsest keeps only faces up to ``GATE`` (160) px in its own pixels: a
larger face is in range of the next level, and large "faces" at a fine level are mostly parts
of a face too big for it. The faces of all levels are merged by NMS (IoU 0.3) that also drops
a box with half its area inside a better one (a part of a face). Boxes and landmarks are in
pixels of the image given.

Cost and smallest face found, by image size (a crowd photo, ultralight_25.jpg, resized; CPU
ms of one thread on a shared 2-core machine, ``min_face``: 20 px at the fine level):

| image | levels | px run | smallest face | CPU ms |
|---|---|---|---|---|
| 250x250 | 375x375 | 0.14 M | 13 px | 5 |
| 640x480 | 960x720 + 640x480 | 1.00 M | 13 px | 38 |
| 1024x768 | 1536x1152 (4 tiles) + 640x480 | 2.63 M | 13 px | 94 |
| 1920x1080 | 2667x1500 (6 tiles) + 667x375 | 5.56 M | 14 px | 172 |
| 2448x1632 | 2449x1633 (6 tiles) + 640x427 | 5.62 M | 20 px | 197 |
| 4032x3024 | 2309x1732 (6 tiles) + 640x480 | 5.83 M | 35 px | 285 |
| 6000x4000 | 2449x1633 (6 tiles) + 640x427 | 5.62 M | 49 px | 359 |

What each level buys, on faces-small (257 photos) at score 0.6, plus *closeup*: the largest
face of each of its 206 people/ photos cropped (1.15 x its box) and upscaled to 1200x1200, so
that it fills the image. Columns: faces found in people/ (photos with none), group/, unknown/
and edge_cases/; false ones in noface/; closeup photos with none (faces found); CPU ms per
image (one thread) for people/, group/, closeup and all of faces-small:

| levels | people | group | unk+edge | noface | closeup | ms: people/group/closeup/all |
|---|---|---|---|---|---|---|
| native only (OpenCV's way) | 268 (0) | 1269 | 12 | 1 | 47 (204) | 4.4 / 30.3 / 37.7 / 8.1 |
| x1.5 only | 273 (0) | 1446 | 14 | 4 | 118 (120) | 10.2 / 59.2 / 122.1 / 18.2 |
| native + coarse | 270 (0) | 1266 | 12 | 1 | 0 (210) | 5.4 / 37.1 / 66.0 / 10.0 |
| **x1.5 + coarse** | 272 (0) | 1451 | 13 | 2 | 0 (211) | 13.4 / 82.7 / 170.7 / 24.3 |
| x2 + coarse | 272 (0) | 1482 | 16 | 3 | 0 (211) | 22.2 / 178.6 / 201.5 / 46.1 |

The coarse level finds no more faces in ordinary photos (and two false ones, on a painting
behind Joseph_Biden_0102), but every close-up (47 of 206 have none without it) for +23 %
time. Upsampling x1.5 finds 185 more faces in the crowd photos (+15 %; 8-13 px, nearly all
real faces when looked at) and one more false one, for 2.4x the time; x2 would add 31 more
for 1.9x the time again, so it is not used.

Score threshold, with this pyramid on faces-small (every people/ photo yields a face at each):
faces found in people/, group/, unknown/, edge_cases/; false ones in noface/; closeup photos
with none:

| threshold | people | group | unknown | edge | noface (photos) | closeup |
|---|---|---|---|---|---|---|
| 0.5 | 283 | 1561 | 5 | 9 | 4 (hubble_deep_field, motorcycle_left) | 0 |
| 0.55 | 273 | 1507 | 5 | 9 | 3 (the same) | 0 |
| **0.6** | 272 | 1451 | 5 | 8 | 2 (the same) | 0 |
| 0.65 | 265 | 1407 | 4 | 8 | 2 (the same) | 0 |
| 0.7 | 260 | 1351 | 4 | 8 | 2 (the same) | 0 |
| 0.75 | 256 | 1275 | 4 | 8 | 1 (motorcycle_left) | 3 |
| 0.8 | 252 | 1145 | 4 | 8 | 0 | 6 |
| 0.85 | 241 | 953 | 4 | 8 | 0 | 30 |
| 0.9 | 225 | 618 | 4 | 8 | 0 | 172 |

Looked at, the faces gained below 0.6 are half non-faces (blobs of a few px, galaxies); from
0.6 up they are nearly all real (background and crowd faces). The two false detections left
at 0.6 (a galaxy at 0.73, the motorcycle's headlight at 0.79) go only at 0.8, which loses a
fifth of the crowd faces and 6 close-ups: ``DEFAULT_SCORE_THRESHOLD`` is 0.6.

The three tables: ``bench/detection.py --study`` (CPU time of one thread while other jobs
used 1.27 of the machine's 2 cores); ``bench/detection.py`` compares YuNet with dlib's HOG.
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from facetrail.errors import ConfigError
from facetrail.faces import shipped
from facetrail.faces.base import Detection, DetectorInfo
from facetrail.faces.cache import derived_graph
from facetrail.faces.onnx_session import import_onnx, onnx_session, require_onnxruntime
from facetrail.imaging import DecodedImage

DEFAULT_SCORE_THRESHOLD = 0.6
"""Score (0..1) a detection needs; chosen from the threshold table in the module docstring."""
NMS_THRESHOLD = 0.3
"""IoU over which the lower-scoring of two boxes is dropped (OpenCV Zoo's default)."""
DERIVATION = 1
"""Version of ``_any_size``: a kept derived graph of another version is never read."""
MAX_PIXELS = 4_000_000
"""Pixels of the finest level at most: larger images are shrunk to this before detection."""
MAX_UPSCALE = 1.0
"""Largest upsampling of the finest level, for small images. Upsampling x1.5 finds more faces
of 8-15 px in crowds, but faces under ``Settings.min_face_px`` (16) are not kept: among faces of
16 px and more it finds 992 against 979 on faces-small, for 2.7x the detection time (5.9 s
against 2.2 s of CPU over the 257 photos). So images are never upsampled."""
COARSE_SIDE = 640
"""Longest side, in pixels, of the coarsest level."""
LEVEL_STEP = 4.0
"""Largest scale factor between two levels."""
GATE = 160.0
"""Largest face side, in a level's own pixels, kept from any level but the coarsest."""
CONTAIN = 0.5
"""Share of a box's area inside a better box at which the merge drops it."""
TILE = 1024
"""Longest tile side, in pixels; larger levels run as overlapping tiles."""
OVERLAP = 192
"""Overlap of neighbouring tiles, in pixels: over ``GATE``, so every face a tiled level keeps
lies whole in the tile that owns its centre."""
DIVISOR = 32
"""The network's input height and width are padded to multiples of this."""
STRIDES = (8, 16, 32)
INPUT = "input"
OUTPUTS = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES)
X = [0, 4, 6, 8, 10, 12]
"""Columns of a face row (see ``decode``) that hold x coordinates ..."""
Y = [1, 5, 7, 9, 11, 13]
"""... and y coordinates."""


@dataclass(frozen=True)
class Level:
    """One level of the pyramid: the image resized to ``width`` x ``height``."""

    scale: float
    """Resize factor from the original image."""
    width: int
    height: int
    gate: float
    """Largest face side kept from this level, in its pixels (``inf`` at the coarsest)."""

    @property
    def pixels(self) -> int:
        return self.width * self.height


def plan(
    width: int,
    height: int,
    max_pixels: int = MAX_PIXELS,
    max_upscale: float = MAX_UPSCALE,
    coarse_side: int = COARSE_SIDE,
) -> list[Level]:
    """The pyramid for a ``width`` x ``height`` image, finest level first."""
    side = max(width, height)
    scales = [min(max_upscale, math.sqrt(max_pixels / (width * height)))]
    # A level up to 800 px finds faces filling it (up to ~700 px) itself.
    while side * scales[-1] > coarse_side / 0.8:
        scales.append(max(scales[-1] / LEVEL_STEP, coarse_side / side))
    return [
        Level(
            scale, max(1, round(width * scale)), max(1, round(height * scale)),
            GATE if i < len(scales) - 1 else math.inf,
        )
        for i, scale in enumerate(scales)
    ]


def min_face(width: int, height: int, max_pixels: int = MAX_PIXELS) -> float:
    """The smallest face side, in original pixels, the pyramid finds reliably (20 px at the
    finest level)."""
    return 20.0 / plan(width, height, max_pixels)[0].scale


class YuNetDetector:
    """YuNet on ONNX Runtime over an input pyramid (see the module docstring).

    ``model`` and ``sha256`` default to the shipped file and its digest; a file whose sha256
    differs is refused. ``score_threshold``: score (0..1) a face needs; ``nms_threshold``:
    IoU over which overlapping faces are merged; ``threads``: ONNX Runtime's intra-op
    threads; ``max_pixels``: the most pixels run at the finest level (see ``plan``);
    ``name``: the detector's name in ``info``; ``models_dir``: where the graph with a free input
    size is kept once derived (``cache.derived_graph``; None: derived at every load). Nothing
    is read until ``load``.
    """

    def __init__(
        self,
        model: Path | None = None,
        sha256: str | None = None,
        *,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        nms_threshold: float = NMS_THRESHOLD,
        threads: int = 1,
        max_pixels: int = MAX_PIXELS,
        name: str = "yunet",
        models_dir: Path | None = None,
    ) -> None:
        if threads < 1:
            raise ConfigError(f"detector threads must be at least 1, not {threads}")
        if not 0.0 < score_threshold < 1.0:
            raise ConfigError(f"YuNet's score threshold must be in (0, 1), not {score_threshold}")
        if not 0.0 < nms_threshold <= 1.0:
            raise ConfigError(f"YuNet's NMS threshold must be in (0, 1], not {nms_threshold}")
        if max_pixels < DIVISOR * DIVISOR:
            raise ConfigError(f"max_pixels must be at least {DIVISOR * DIVISOR}, not {max_pixels}")
        if model is None:
            model = shipped.path(shipped.YUNET)
            sha256 = sha256 or shipped.DIGESTS[shipped.YUNET]
        if sha256 is None:
            raise ConfigError(f"the sha256 of the face detector {model} is needed to load it")
        self.model = model
        self.sha256 = sha256
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.threads = threads
        self.max_pixels = max_pixels
        self.name = name
        self.models_dir = models_dir
        self._session: Any = None
        self._loading = threading.Lock()

    @property
    def info(self) -> DetectorInfo:
        return DetectorInfo(name=self.name, version=self.sha256[:16], landmarks="five",
                            probability=True)

    def load(self) -> None:
        """Verify the model file, make its input size symbolic in memory and open a session.

        Raises ConfigError when the file is missing, damaged (sha256), not ONNX or not
        YuNet-shaped, and MissingExtraError when onnx or onnxruntime is not installed. Threads
        calling it together load once; the session then runs for all of them at once.
        """
        if self._session is not None:
            return
        with self._loading:
            if self._session is not None:
                return
            data = shipped.read_verified(self.model, self.sha256)
            require_onnxruntime()

            def build() -> bytes:
                return _any_size(import_onnx(), data, self.model)

            graph = derived_graph(self.models_dir,
                                  f"yunet-{self.sha256[:16]}-d{DERIVATION}.onnx", build)
            self._session = onnx_session(graph, self.threads, f"the face detector {self.model}")

    def detect(self, image: DecodedImage) -> list[Detection]:
        """Every face in ``image``, best score first; boxes and landmarks in its pixels."""
        return self.detect_pixels(image.pixels)

    def detect_pixels(
        self, pixels: np.ndarray, levels: list[Level] | None = None
    ) -> list[Detection]:
        """Every face in uint8 RGB ``pixels`` of shape (height, width, 3), best first.
        ``levels``: another pyramid than ``plan``'s (for measurements), finest first."""
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"expected uint8 (height, width, 3) RGB, not {pixels.dtype} "
                             f"{pixels.shape}")
        self.load()
        height, width = pixels.shape[:2]
        found = []
        source = pixels
        for level in levels or plan(width, height, self.max_pixels):
            # Shrink the last level when it is no larger than the original (cheaper), else
            # resize the original: an upsampled image is never resampled again.
            if not level.width <= source.shape[1] <= width:
                source = pixels
            source = _resized(source, level.width, level.height)
            found.append(self._faces_at(source, level, width, height))
        return [_detection(row) for row in merge(found, self.nms_threshold)]

    def run_level(self, pixels: np.ndarray, level: Level) -> np.ndarray:
        """The faces one level finds, after its NMS and gate: (n, 15) float32 rows as
        ``decode`` gives them, in pixels of ``pixels``."""
        self.load()
        height, width = pixels.shape[:2]
        return self._faces_at(_resized(pixels, level.width, level.height), level, width, height)

    def _faces_at(self, resized: np.ndarray, level: Level, width: int, height: int) -> np.ndarray:
        """``run_level`` on the level's image ``resized``, for an original of ``width`` x
        ``height``: tile by tile, each face kept by the tile that owns its centre."""
        tiled = math.isfinite(level.gate)
        found = []
        for (x0, xa, xb, tw), (y0, ya, yb, th) in _tiles(level.width, level.height, tiled):
            faces = self.run_network(resized[y0 : y0 + th, x0 : x0 + tw])
            faces = faces[np.maximum(faces[:, 2], faces[:, 3]) <= level.gate]
            faces[:, X] += x0
            faces[:, Y] += y0
            cx, cy = faces[:, 0] + faces[:, 2] / 2, faces[:, 1] + faces[:, 3] / 2
            found.append(faces[(cx >= xa) & (cx < xb) & (cy >= ya) & (cy < yb)])
        faces = np.concatenate(found)
        faces[:, 0:14:2] *= np.float32(width / level.width)
        faces[:, 1:14:2] *= np.float32(height / level.height)
        return faces

    def run_network(self, pixels: np.ndarray) -> np.ndarray:
        """One network call on uint8 RGB ``pixels`` as OpenCV's ``FaceDetectorYN.detect``
        makes it: the faces scoring at least the threshold, after NMS, as (n, 15) float32."""
        self.load()
        blob = to_blob(pixels)
        outputs = self._session.run(list(OUTPUTS), {INPUT: blob})
        faces = decode(outputs, blob.shape[2], blob.shape[3], self.score_threshold)
        # OpenCV's NMSBoxes sees the boxes as cv::Rect2i, truncated to whole pixels.
        return faces[nms(np.trunc(faces[:, :4]), faces[:, 14], self.nms_threshold)]


Cut = tuple[int, float, float, int]
"""One tile along an axis: start, owned region [from, to), and length, in pixels."""


def _tiles(width: int, height: int, tiled: bool = True) -> list[tuple[Cut, Cut]]:
    """The tiles a level runs as, (x cut, y cut) each: at most ``TILE`` px on a side,
    neighbours overlapping by at least ``OVERLAP`` px. A face belongs to the tile whose owned
    region holds its centre: the regions meet in the middle of each overlap, so a face up to
    ``OVERLAP`` px lies whole inside the tile it belongs to. One tile if not ``tiled``."""
    def cuts(length: int) -> list[Cut]:
        n = max(1, math.ceil((length - OVERLAP) / (TILE - OVERLAP))) if tiled else 1
        if n == 1:
            return [(0, -math.inf, math.inf, length)]
        # Equal tiles, each a multiple of DIVISOR so that none is padded in the middle.
        size = min(TILE, -(-math.ceil((length + (n - 1) * OVERLAP) / n) // DIVISOR) * DIVISOR)
        starts = [round(i * (length - size) / (n - 1)) for i in range(n)]
        middles = [(a + size + b) / 2 for a, b in itertools.pairwise(starts)]
        return list(zip(starts, [-math.inf, *middles], [*middles, math.inf], [size] * n,
                        strict=True))

    return [(x, y) for y in cuts(height) for x in cuts(width)]


def _resized(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """``pixels`` resized to ``width`` x ``height`` (bilinear; Pillow widens the filter when
    shrinking, so a downscale is antialiased)."""
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    image = Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image)


def merge(levels: list[np.ndarray], iou: float) -> np.ndarray:
    """The faces of all levels, one per face, best score first: greedy NMS that drops a box
    whose IoU with a better one is over ``iou``, or which has ``CONTAIN`` of its area inside
    a better one. One level's faces are returned as they are (already NMS'd)."""
    faces = np.concatenate(levels) if levels else np.zeros((0, 15), np.float32)
    if len(levels) == 1:
        return faces[np.argsort(-faces[:, 14], kind="stable")]
    return faces[nms(faces[:, :4], faces[:, 14], iou, CONTAIN)]


def to_blob(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB (h, w, 3) -> float32 BGR (1, 3, H, W) with raw 0-255 values, zero-padded
    right and bottom to multiples of ``DIVISOR``."""
    height, width = pixels.shape[:2]
    blob = np.zeros((1, 3, -(-height // DIVISOR) * DIVISOR, -(-width // DIVISOR) * DIVISOR),
                    np.float32)
    blob[0, :, :height, :width] = pixels[:, :, ::-1].transpose(2, 0, 1)
    return blob


def decode(outputs: list[np.ndarray], pad_h: int, pad_w: int, threshold: float) -> np.ndarray:
    """The faces scoring at least ``threshold`` in the network's ``outputs`` (in ``OUTPUTS``
    order) for a ``pad_w`` x ``pad_h`` input: (n, 15) float32 rows of box (x, y, w, h), five
    landmarks (x, y) in the ``five`` order, and score, in input pixels, in the order of
    OpenCV's ``postProcess`` (stride by stride, row by row)."""
    found = []
    for i, stride in enumerate(STRIDES):
        cls, obj, bbox, kps = (outputs[i + k * len(STRIDES)][0] for k in range(4))
        cols = pad_w // stride
        score = np.sqrt(np.clip(cls[:, 0], 0, 1) * np.clip(obj[:, 0], 0, 1))
        idx = np.flatnonzero(score >= threshold)
        cell = np.stack([idx % cols, idx // cols], axis=1).astype(np.float32)
        s = np.float32(stride)
        centre = (cell + bbox[idx, 0:2]) * s
        size = np.exp(bbox[idx, 2:4]) * s
        marks = (kps[idx].reshape(-1, 5, 2) + cell[:, None, :]) * s
        found.append(np.concatenate(
            [centre - size / 2, size, marks.reshape(-1, 10), score[idx, None]], axis=1
        ))
    return np.concatenate(found).astype(np.float32, copy=False)


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou: float, contain: float = math.inf
) -> np.ndarray:
    """Indices of the boxes greedy non-maximum suppression keeps, best score first (ties in
    input order): a box is dropped when its IoU with a kept box is over ``iou``, or when the
    intersection is over ``contain`` of the smaller box's area (by default never: OpenCV's
    rule). ``boxes``: (n, 4) as (x, y, w, h)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    area = boxes[:, 2] * boxes[:, 3]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        inside = inter / np.maximum(np.minimum(area[i], area[rest]), 1e-9)
        order = rest[(overlap <= iou) & (inside <= contain)]
    return np.asarray(keep, dtype=np.intp)


def _detection(row: np.ndarray) -> Detection:
    marks = tuple((float(row[4 + 2 * n]), float(row[5 + 2 * n])) for n in range(5))
    box = (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
    return Detection(box=box, landmarks=marks, score=float(row[14]))


def _any_size(onnx: Any, data: bytes, path: Path) -> bytes:
    """The model with its input's height and width and its outputs' anchor dimension made
    symbolic: ONNX Runtime refuses any size but the declared 640x640 otherwise. In memory
    only; the file is never changed."""
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError, and whatever else a bad file raises
        raise ConfigError(f"the face detector {path} is not an ONNX model: {exc}") from exc
    inputs = {i.name: i for i in model.graph.input}
    outputs = {o.name: o for o in model.graph.output}
    if INPUT not in inputs or set(OUTPUTS) - set(outputs):
        raise ConfigError(
            f"the face detector {path} is not YuNet-shaped: it needs an input {INPUT!r} and "
            f"the outputs {', '.join(OUTPUTS)}"
        )
    dims = inputs[INPUT].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ConfigError(f"the face detector {path}'s input is not NCHW")
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for name in OUTPUTS:
        outputs[name].type.tensor_type.shape.dim[1].dim_param = f"anchors_{name.split('_')[1]}"
    # The shapes inferred for 640x640 would contradict any other size.
    del model.graph.value_info[:]
    return bytes(model.SerializeToString())
