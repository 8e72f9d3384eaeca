"""The dlib face model on real photos: faces found per image, geometry, and stored fields."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FACES, PEOPLE
from facetrail.faces import make_model
from facetrail.faces.geometry import plan
from facetrail.imaging import decode
from facetrail.pipeline.analyze import Analyzer
from facetrail.settings import Settings

SETTINGS = Settings(home="/nonexistent")

EXPECTED_FACES = {
    "people/Ashanti/Ashanti_0001.jpg": 1,
    "people/Barack_Obama/Barack_Obama_0001.jpg": 1,
    "people/Jesse_Jackson/Jesse_Jackson_0001.jpg": 3,
    "people/Oprah_Winfrey/Oprah_Winfrey_0001.jpg": 2,
    "people/James_McGreevey/James_McGreevey_0002.jpg": 0,
    "group/two_people.jpg": 2,
    "group/kit_with_rose.jpg": 2,
    "edge_cases/obama2_32bit_rgba.png": 1,
    "unknown/lin-manuel-miranda.jpg": 1,
    "unknown/skimage_astronaut.jpg": 2,
    "unknown/skimage_camera.jpg": 1,
    "noface/skimage_chelsea.jpg": 0,
    "noface/skimage_coins.jpg": 0,
}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):  # type: ignore[no-untyped-def]
    settings = SETTINGS.model_copy(update={"home": tmp_path_factory.mktemp("home")})
    analyzer = Analyzer(settings, make_model("dlib", settings))
    analyzer.model.load()
    return analyzer


@pytest.mark.parametrize(("name", "count"), EXPECTED_FACES.items(), ids=list(EXPECTED_FACES))
def test_faces_found_per_fixture(backend, name: str, count: int) -> None:  # type: ignore[no-untyped-def]
    image = decode((FACES / name).read_bytes(), SETTINGS)
    faces = backend.faces(image)
    assert len(faces) == count
    for face in faces:
        x, y, w, h = face.box
        assert x >= 0 and y >= 0 and x + w <= image.width and y + h <= image.height
        assert len(face.landmarks) == 5
        assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32
        assert 1.0 < float(np.linalg.norm(face.embedding)) < 2.0  # dlib's are not unit length
        assert 0.0 <= face.quality <= 1.0 and face.det_score >= SETTINGS.hog_threshold
    assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)


def test_same_person_is_closer_than_another(backend) -> None:  # type: ignore[no-untyped-def]
    def vector(path):  # type: ignore[no-untyped-def]
        return backend.faces(decode(path.read_bytes(), SETTINGS))[0].embedding

    a = vector(PEOPLE / "Barack_Obama" / "Barack_Obama_0001.jpg")
    b = vector(PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg")
    c = vector(PEOPLE / "Angelina_Jolie" / "Angelina_Jolie_0001.jpg")
    assert np.linalg.norm(a - b) < 0.6 < np.linalg.norm(a - c)


def test_model_identity_is_recorded(backend) -> None:  # type: ignore[no-untyped-def]
    model = backend.model.model
    assert model.detector == "dlib-hog@frontal-v1"
    assert model.key.startswith("dlib-hog@frontal-v1+dlib_face_recognition_resnet_model_v1@")
    assert model.name == "dlib_face_recognition_resnet_model_v1" and model.dim == 128
    assert len(model.version) == 16 and "5pt" in model.alignment
    assert model.normalisation == "none" and model.metric == "l2"


@pytest.mark.parametrize(
    ("size", "scale", "upsample", "min_face"),
    [
        ((250, 250), 1.0, 1, 40.0),
        ((1600, 900), 1.0, 1, 40.0),
        ((2400, 1600), 3200 / 4800, 1, 60.0),
        ((6400, 4800), 0.5, 0, 160.0),
    ],
)
def test_detection_plan(size, scale, upsample, min_face) -> None:  # type: ignore[no-untyped-def]
    p = plan(*size, grid=3200)
    assert (p.scale, p.upsample) == (pytest.approx(scale), upsample)
    assert p.min_face_px == pytest.approx(min_face)


def test_large_image_is_detected_downscaled_and_mapped_back(backend) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    photo = Image.open(PEOPLE / "Ashanti" / "Ashanti_0001.jpg").resize((4000, 4000))
    big = decode(_png(photo), SETTINGS)
    small = decode((PEOPLE / "Ashanti" / "Ashanti_0001.jpg").read_bytes(), SETTINGS)
    (face_big,) = backend.faces(big)
    (face_small,) = backend.faces(small)
    ratio = 4000 / 250
    for got, want in zip(face_big.box, face_small.box, strict=True):
        assert abs(got - want * ratio) <= 0.15 * face_small.box[2] * ratio


def _png(image) -> bytes:  # type: ignore[no-untyped-def]
    import io

    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_saved_hog_detector_is_dlibs_own(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import dlib

    from facetrail.faces.dlib_backend import hog_detector

    builtin = dlib.get_frontal_face_detector()
    first = hog_detector(tmp_path)  # saves dlib's copy
    saved = list(tmp_path.iterdir())
    assert [p.name for p in saved] == [f"dlib_frontal_face_detector_{dlib.__version__}.svm"]
    loaded = hog_detector(tmp_path)  # reads it back
    assert loaded is not first
    photos = [*sorted((FACES / "group").iterdir()), *sorted(PEOPLE.glob("*/*"))[::10]]
    found = 0
    for photo in photos:
        grey = np.asarray(decode(photo.read_bytes(), Settings(home=tmp_path)).pixels.mean(axis=2),
                          dtype=np.uint8)
        want = builtin.run(grey, 1, -0.2)
        got = loaded.run(grey, 1, -0.2)
        assert [(str(r), s, i) for r, s, i in zip(*got, strict=True)] == [
            (str(r), s, i) for r, s, i in zip(*want, strict=True)
        ], photo.name
        found += len(want[0])
    assert found >= 25
    saved[0].write_bytes(b"not a detector")
    assert hog_detector(tmp_path).run(grey, 1, -0.2)[1] == want[1]  # damaged copy: saved again
    assert saved[0].stat().st_size > 100_000
