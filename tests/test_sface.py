"""SFace embedder and five-point alignment: the real shipped model on real fixture photos.

The landmarks are YuNet's (OpenCV 5.0 ``FaceDetectorYN``, score threshold 0.6) on each photo,
rounded to 0.1 px, so these tests need no detector.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facetrail.errors import ConfigError
from facetrail.faces import align, shipped
from facetrail.faces.base import Detection
from facetrail.faces.sface import DIM, SFaceEmbedder, derive, to_blob

PEOPLE = Path(__file__).parent / "data" / "faces" / "people"
LANDMARKS = {
    "Barack_Obama/Barack_Obama_0001.jpg":
        ((247.2, 120.6), (312.2, 121.1), (278.8, 150.8), (247.1, 178.7), (307.7, 180.1)),
    "Barack_Obama/Barack_Obama_0002.jpg":
        ((129.9, 199.9), (196.9, 204.6), (147.7, 243.0), (130.2, 279.3), (187.5, 282.6)),
    "Barack_Obama/Barack_Obama_0003.jpg":
        ((201.8, 104.3), (237.5, 105.1), (223.0, 122.3), (202.1, 139.7), (232.9, 140.4)),
    "Angelina_Jolie/Angelina_Jolie_0001.jpg":
        ((104.8, 112.7), (148.8, 112.3), (132.9, 139.2), (108.9, 157.0), (146.5, 156.8)),
    "Bruce_Springsteen/Bruce_Springsteen_0001.jpg":
        ((107.5, 111.3), (152.9, 110.1), (136.8, 137.2), (114.0, 157.3), (148.5, 155.4)),
    "Gwyneth_Paltrow/Gwyneth_Paltrow_0001.jpg":
        ((103.8, 113.5), (149.2, 113.1), (126.3, 137.9), (107.2, 155.3), (146.3, 153.3)),
}


def pixels(name: str) -> np.ndarray:
    with Image.open(PEOPLE / name) as image:
        return np.asarray(image.convert("RGB"))


def detection(name: str) -> Detection:
    return Detection(box=(0.0, 0.0, 1.0, 1.0), landmarks=LANDMARKS[name], score=0.9)


@pytest.fixture(scope="module")
def embedder() -> SFaceEmbedder:
    model = SFaceEmbedder()
    model.load()
    return model


@pytest.fixture(scope="module")
def chips(embedder: SFaceEmbedder) -> dict[str, np.ndarray]:
    return {name: embedder.align(pixels(name), [detection(name)])[0] for name in LANDMARKS}


@pytest.fixture(scope="module")
def vectors(embedder: SFaceEmbedder, chips: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip(chips, embedder.embed(list(chips.values())), strict=True))


def test_similarity_of_the_template_to_itself_is_the_identity() -> None:
    matrix = align.similarity(align.ARCFACE_112)
    np.testing.assert_allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_similarity_recovers_a_known_rotation_scale_and_shift() -> None:
    angle, scale, shift = math.radians(23.0), 0.37, np.array([12.5, -40.0])
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    truth = np.array([[c, -s, shift[0]], [s, c, shift[1]]])
    # The face points that ``truth`` carries onto the template.
    points = (align.ARCFACE_112 - shift) @ np.linalg.inv(truth[:, :2]).T
    np.testing.assert_allclose(align.similarity(points), truth, atol=1e-9)


def test_similarity_never_reflects() -> None:
    mirrored = align.ARCFACE_112 * [-1.0, 1.0]
    matrix = align.similarity(mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_warp_by_a_whole_pixel_shift_copies_pixels_and_blacks_out_the_outside() -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    chip = align.warp(image, np.array([[1.0, 0, -10], [0, 1.0, -20]]), (30, 25))
    assert chip.shape == (25, 30, 3) and chip.dtype == np.uint8
    np.testing.assert_array_equal(chip[:20], image[20:40, 10:40])
    assert not chip[20:].any()


def test_warp_by_half_a_pixel_averages_neighbours() -> None:
    image = np.zeros((4, 4, 1), dtype=np.uint8)
    image[:, 1] = 100
    chip = align.warp(image, np.array([[1.0, 0, -0.5], [0, 1.0, 0]]), 3)
    np.testing.assert_array_equal(chip[:, :, 0], [[50, 50, 0]] * 3)


def test_chip_of_a_known_face_is_112_rgb(chips: dict[str, np.ndarray]) -> None:
    chip = chips["Barack_Obama/Barack_Obama_0001.jpg"]
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    assert chip.std() > 20  # a face, not a blank fill


def test_vectors_are_unit_length_float32(vectors: dict[str, np.ndarray]) -> None:
    stacked = np.stack(list(vectors.values()))
    assert stacked.dtype == np.float32 and stacked.shape == (len(LANDMARKS), DIM)
    np.testing.assert_allclose(np.linalg.norm(stacked, axis=1), 1.0, atol=1e-5)


def test_same_person_scores_higher_than_different_people(
    vectors: dict[str, np.ndarray],
) -> None:
    obama = [v for name, v in vectors.items() if name.startswith("Barack_Obama")]
    others = [v for name, v in vectors.items() if not name.startswith("Barack_Obama")]
    same = [float(a @ b) for i, a in enumerate(obama) for b in obama[i + 1 :]]
    different = [float(a @ b) for a in obama for b in others]
    assert min(same) > max(different)
    assert min(same) > 0.363 > max(different)  # OpenCV's suggested same-person threshold


def test_embedding_is_independent_of_the_batch(
    embedder: SFaceEmbedder, chips: dict[str, np.ndarray], vectors: dict[str, np.ndarray]
) -> None:
    name = "Angelina_Jolie/Angelina_Jolie_0001.jpg"
    np.testing.assert_allclose(embedder.embed([chips[name]])[0], vectors[name], atol=1e-6)


def test_derived_graph_matches_the_shipped_one(chips: dict[str, np.ndarray]) -> None:
    import onnx
    import onnxruntime as ort

    shipped_graph = shipped.read(shipped.SFACE)
    derived = derive(onnx.load_from_string(shipped_graph)).SerializeToString()
    run = {
        label: ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        for label, model in (("shipped", shipped_graph), ("derived", derived))
    }
    blob = to_blob(np.stack(list(chips.values())))
    expected = np.concatenate([run["shipped"].run(None, {"data": b[None]})[0] for b in blob])
    got = run["derived"].run(None, {"data": blob})[0]
    assert got.shape == expected.shape == (len(chips), DIM)
    assert np.abs(got - expected).max() < 1e-4


def test_a_damaged_model_file_is_refused(tmp_path: Path) -> None:
    damaged = tmp_path / "sface.onnx"
    data = bytearray(shipped.read(shipped.SFACE))
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    model = SFaceEmbedder(damaged, shipped.DIGESTS[shipped.SFACE])  # reads nothing yet
    with pytest.raises(ConfigError, match="damaged"):
        model.load()
    with pytest.raises(ConfigError, match="cannot read"):
        SFaceEmbedder(tmp_path / "missing.onnx", "0" * 64).embed([np.zeros((112, 112, 3))])


def test_no_chips_give_no_vectors() -> None:
    out = SFaceEmbedder().embed([])
    assert out.shape == (0, DIM) and out.dtype == np.float32


def test_info_names_the_space() -> None:
    model = SFaceEmbedder()
    info = model.info
    assert (info.name, info.dim, info.alignment, info.normalisation, info.metric,
            info.landmarks) == ("sface", 128, "arcface5-112", "l2", "cosine", "five")
    assert info.version == shipped.DIGESTS[shipped.SFACE][:16]
    assert model.runtime == "onnx"
