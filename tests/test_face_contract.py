"""The contract every Detector and every Embedder keeps, checked on each implementation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import FACES, PEOPLE
from facetrail.faces import Detector, Embedder, make_detector, make_embedder, shipped
from facetrail.faces.base import LANDMARK_SCHEMES, METRICS, Detection
from facetrail.faces.onnx_embedder import OnnxChipEmbedder
from facetrail.imaging import DecodedImage, decode
from facetrail.settings import Settings

SETTINGS = Settings(home=Path("/nonexistent"))
DETECTORS: dict[str, Callable[[], Detector]] = {
    "yunet": lambda: make_detector("yunet", SETTINGS),
    "dlib-hog": lambda: make_detector("dlib-hog", SETTINGS),
}
EMBEDDERS: dict[str, Callable[[], Embedder]] = {
    "sface": lambda: make_embedder("sface", SETTINGS),
    "dlib-resnet": lambda: make_embedder("dlib-resnet", SETTINGS),
    "user-onnx": lambda: OnnxChipEmbedder(
        shipped.path(shipped.SFACE), shipped.DIGESTS[shipped.SFACE], name="user-sface",
        input_size=112, mean=0.0, std=1.0, channels="rgb", template="arcface",
        metric="cosine"),
}
PAIRING = {"five": "yunet", "dlib5": "dlib-hog"}
"""A detector whose landmarks each embedder's alignment takes."""


def _image(path: Path) -> DecodedImage:
    return decode(path.read_bytes(), SETTINGS)


@pytest.fixture(scope="module", params=list(DETECTORS))
def detector(request: pytest.FixtureRequest) -> Detector:
    return DETECTORS[request.param]()


@pytest.fixture(scope="module", params=list(EMBEDDERS))
def embedder(request: pytest.FixtureRequest) -> Embedder:
    return EMBEDDERS[request.param]()


def test_a_detector_finds_faces_with_five_landmarks_in_its_scheme(detector: Detector) -> None:
    info = detector.info
    assert info.landmarks in LANDMARK_SCHEMES and info.key == f"{info.name}@{info.version}"
    image = _image(FACES / "group" / "kit_with_rose.jpg")
    found = detector.detect(image)
    assert len(found) == 2
    for d in found:
        x, y, w, h = d.box
        assert w > 20 and h > 20 and -w / 4 <= x < image.width and -h / 4 <= y < image.height
        assert len(d.landmarks) == 5
        assert all(x - w / 2 <= px <= x + 1.5 * w and y - h / 2 <= py <= y + 1.5 * h
                   for px, py in d.landmarks)
    assert detector.detect(_image(FACES / "noface" / "skimage_coins.jpg")) == []
    # The same image twice gives the same detections.
    assert detector.detect(image) == found


def test_an_embedder_declares_its_space_and_keeps_it(embedder: Embedder) -> None:
    info = embedder.info
    assert info.metric in METRICS and info.landmarks in LANDMARK_SCHEMES
    assert info.dim >= 2 and len(info.version) == 16 and info.alignment
    detector = DETECTORS[PAIRING[info.landmarks]]()
    photos = [PEOPLE / "Barack_Obama" / "Barack_Obama_0001.jpg",
              PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg",
              PEOPLE / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg"]
    vectors = []
    for photo in photos:
        image = _image(photo)
        detections = detector.detect(image)
        chips = embedder.align(image.pixels, detections)
        assert len(chips) == len(detections) >= 1
        assert all(c.dtype == np.uint8 and c.ndim == 3 and c.shape[2] == 3 for c in chips)
        out = embedder.embed(chips)
        assert out.shape == (len(chips), info.dim) and out.dtype == np.float32
        assert np.all(np.isfinite(out))
        np.testing.assert_allclose(embedder.embed(chips[:1])[0], out[0], atol=1e-5)
        largest = max(range(len(detections)),
                      key=lambda i: detections[i].box[2] * detections[i].box[3])
        vectors.append(out[largest])
    if info.metric == "cosine":
        assert np.allclose(np.linalg.norm(np.stack(vectors), axis=1), 1.0, atol=1e-5)
    distance = [float(np.linalg.norm(vectors[0] - v)) for v in vectors[1:]]
    assert distance[0] < distance[1]  # the same person is nearer than another
    assert embedder.embed([]).shape == (0, info.dim)


def _loaded(model: object) -> object:
    """What a back end's ``load`` made (its session, or its dlib objects)."""
    state = vars(model)
    return next(state[k] for k in ("_session", "_models", "_describer") if k in state)


def _at_once(threads: int, work: Callable[[int], object]) -> list[object]:
    """``work(i)`` for i in range(threads), on that many threads started together."""
    start = threading.Barrier(threads)
    results: list[object] = [None] * threads
    errors: list[BaseException] = []

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.parametrize("name", list(DETECTORS))
def test_a_detector_loads_once_and_detects_in_many_threads_at_once(name: str) -> None:
    """A server's requests share one detector: its first use loads it once, and detections
    made at the same time are those made one by one."""
    detector = DETECTORS[name]()
    images = [_image(p) for p in sorted(PEOPLE.glob("*/*.jpg"))[:3]]
    images.append(_image(FACES / "group" / "kit_with_rose.jpg"))

    def detect(i: int) -> tuple[object, list[list[Detection]]]:
        found = [detector.detect(images[(i + k) % len(images)]) for k in range(len(images))]
        return _loaded(detector), found

    results = _at_once(6, detect)
    assert len({id(loaded) for loaded, _ in results}) == 1
    alone = [detector.detect(image) for image in images]
    for i, (_, found) in enumerate(results):
        assert found == [alone[(i + k) % len(images)] for k in range(len(images))]


@pytest.mark.parametrize("name", list(EMBEDDERS))
def test_an_embedder_loads_once_and_embeds_in_many_threads_at_once(name: str) -> None:
    embedder = EMBEDDERS[name]()
    detector = DETECTORS[PAIRING[embedder.info.landmarks]]()
    chips = []
    for photo in sorted(PEOPLE.glob("*/*.jpg"))[:4]:
        image = _image(photo)
        chips += embedder.align(image.pixels, detector.detect(image))[:1]
    fresh = EMBEDDERS[name]()  # not loaded yet: its first use is from every thread at once

    def embed(i: int) -> tuple[object, np.ndarray]:
        out = fresh.embed(chips[i % len(chips):] + chips[:i % len(chips)])
        return _loaded(fresh), out

    results = _at_once(6, embed)
    assert len({id(loaded) for loaded, _ in results}) == 1
    alone = fresh.embed(chips)
    for i, (_, out) in enumerate(results):
        k = i % len(chips)
        np.testing.assert_allclose(out, np.concatenate([alone[k:], alone[:k]]), atol=1e-5)
