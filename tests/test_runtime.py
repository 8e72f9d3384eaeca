"""The descriptor on ONNX Runtime against dlib itself: same vectors, same search results.

Every fixture photo is ingested twice, once with each runtime, through the public API; the
two stores are then compared face by face, and the same probes are searched in both.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import facetrail
from conftest import FACES, PEOPLE
from facetrail import serialize
from facetrail.engine import Facetrail
from facetrail.errors import ConfigError, NoFaceError
from facetrail.faces import make_embedder, make_model, onnx_convert
from facetrail.faces.descriptor import DlibDescriptor, OnnxDescriptor
from facetrail.faces.dlib_backend import weights_path
from facetrail.imaging import decode
from facetrail.pipeline.analyze import Analyzer
from facetrail.settings import Settings
from facetrail.store import open_store
from stores import new_database, own_store, postgres_mode, raw_sql, store_url_of

CASE = {"case_ref": "T-1", "purpose": "test"}
TOLERANCE = 1e-4
FaceKey = tuple[str, tuple[int, int, int, int]]


def _ingest_all(home: Path, runtime: str) -> Facetrail:
    own_store(home)
    engine = facetrail.open(home, workers=2, descriptor_runtime=runtime, face_model="dlib",
                            store_url=store_url_of(home))
    engine.add_source("faces", "folder", FACES, lawful_basis="test fixtures, public data sets",
                      purpose="testing", retention_days=30)
    report = engine.ingest("faces")
    assert report.errors == 0 and report.faces > 200
    return engine


@pytest.fixture(scope="module")
def galleries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Facetrail]]:
    engines = {r: _ingest_all(tmp_path_factory.mktemp(r), r) for r in ("onnx", "dlib")}
    yield engines
    for engine in engines.values():
        engine.close()


def _faces(engine: Facetrail) -> dict[FaceKey, tuple[np.ndarray, str]]:
    """Every stored face, keyed by its image's sha256 and its box, with vector and runtime."""
    out = {}
    for ids, vectors in engine.store.iter_embeddings(engine.model_id):
        rows = engine.store.faces([int(i) for i in ids])
        for face_id, vector in zip(ids, vectors, strict=True):
            row = rows[int(face_id)]
            out[(row.image.sha256, row.box)] = (vector, row.runtime)
    return out


def test_every_fixture_face_has_dlibs_descriptor(galleries: dict[str, Facetrail]) -> None:
    onnx, dlib = _faces(galleries["onnx"]), _faces(galleries["dlib"])
    assert onnx.keys() == dlib.keys(), "the same faces are found whatever the runtime"
    assert len(onnx) >= 230
    assert {runtime for _, runtime in onnx.values()} == {"onnx"}
    assert {runtime for _, runtime in dlib.values()} == {"dlib"}
    worst = max(float(np.abs(onnx[k][0] - dlib[k][0]).max()) for k in onnx)
    assert worst <= TOLERANCE, f"max |onnx - dlib| = {worst:.2e} over {len(onnx)} faces"
    assert galleries["onnx"].model == galleries["dlib"].model


def _probes() -> list[Path]:
    """One photo of each identity, every group photo and every open-set probe."""
    firsts = [sorted(person.iterdir())[0] for person in sorted(PEOPLE.iterdir())]
    return [*firsts, *sorted((FACES / "group").iterdir()), *sorted((FACES / "unknown").iterdir())]


def _answers(engine: Facetrail, probe: Path) -> list[tuple[object, ...]]:
    try:
        result = engine.search(probe, top=10, threshold=-10.0, all_faces=True, **CASE)
    except NoFaceError:
        return []
    return [
        (c.probe_face, c.rank, c.image.sha256, c.box, c.score)
        for c in result.candidates
    ]


def test_search_results_are_the_same(galleries: dict[str, Facetrail]) -> None:
    """Same candidates in the same order; scores (rounded to 4 decimals) within one unit."""
    compared = 0
    for probe in _probes():
        onnx, dlib = _answers(galleries["onnx"], probe), _answers(galleries["dlib"], probe)
        assert [a[:4] for a in onnx] == [a[:4] for a in dlib], probe.name
        for a, b in zip(onnx, dlib, strict=True):
            assert abs(float(a[4]) - float(b[4])) <= 1e-4 + 1e-9, (probe.name, a, b)  # type: ignore[arg-type]
        compared += len(onnx)
    assert compared >= 500


def test_search_and_stats_say_which_runtime(galleries: dict[str, Facetrail]) -> None:
    for runtime, engine in galleries.items():
        result = engine.search(PEOPLE / "Barack_Obama" / "Barack_Obama_0001.jpg", **CASE)
        assert result.candidates and {c.runtime for c in result.candidates} == {runtime}
        assert serialize.search_result(result)["candidates"][0]["runtime"] == runtime
        stats = engine.stats()
        assert stats.descriptor_runtime == runtime
        assert stats.store.faces_by_runtime == {runtime: stats.store.faces}


def test_batches_give_the_same_vectors_as_single_chips(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    chips = [rng.integers(0, 256, (150, 150, 3), dtype=np.uint8) for _ in range(35)]
    runtime = OnnxDescriptor(weights_path("resnet"), tmp_path, threads=2)
    batched = runtime.describe(chips)  # 32 + 3
    assert batched.shape == (35, 128) and batched.dtype == np.float32
    single = np.concatenate([runtime.describe([c]) for c in chips[:3]])
    np.testing.assert_allclose(batched[:3], single, atol=1e-6)
    reference = DlibDescriptor(weights_path("resnet")).describe(chips[:3])
    assert float(np.abs(batched[:3] - reference).max()) <= TOLERANCE
    assert runtime.describe([]).shape == (0, 128)


def test_converted_model_is_cached_by_the_weights_hash(tmp_path: Path) -> None:
    dat = weights_path("resnet")
    path = onnx_convert.cached_model(dat, tmp_path)
    assert path.parent == tmp_path
    assert path.name == f"dlib_resnet_{onnx_convert.file_sha256(dat)[:12]}.onnx"
    stamp = path.stat().st_mtime_ns
    assert onnx_convert.cached_model(dat, tmp_path) == path
    assert path.stat().st_mtime_ns == stamp, "a cached conversion is reused, not redone"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


_WITHOUT_ONNXRUNTIME = """
import sys
sys.modules["onnxruntime"] = None  # as if the extra were not installed
from facetrail.errors import MissingExtraError
from facetrail.faces.descriptor import resolve_runtime
print(resolve_runtime("auto"))
try:
    resolve_runtime("onnx")
except MissingExtraError as exc:
    print(exc.code, exc)
"""


def test_without_onnxruntime_auto_falls_back_and_onnx_is_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_ONNXRUNTIME], capture_output=True,
                          text=True, env=env, check=True, timeout=120)
    fallback, error = proc.stdout.splitlines()
    assert fallback == "dlib"
    assert error.startswith("missing_extra ") and "pip install 'facetrail[onnx]'" in error


def test_unwritable_data_directory_still_describes(tmp_path: Path) -> None:
    blocked = tmp_path / "models"
    blocked.write_text("a file where the models folder would go")
    settings = Settings(home=tmp_path)
    analyzer = Analyzer(settings, make_model("dlib", settings))
    analyzer.model.load()
    faces = analyzer.faces(decode(PEOPLE.joinpath("Barack_Obama", "Barack_Obama_0001.jpg")
                                   .read_bytes(), Settings(home=tmp_path)))
    assert faces and faces[0].runtime == "onnx"
    assert blocked.is_file()


def test_unknown_runtime_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown descriptor runtime 'tensorrt'"):
        make_embedder("dlib-resnet", Settings(home=tmp_path, descriptor_runtime="tensorrt"))


def test_faces_stored_before_the_runtime_column_count_as_dlib(tmp_path: Path) -> None:
    """A schema-1 store (no runtime column), opened by this facetrail: its faces are dlib's."""
    schema = resources.files("facetrail.store")
    zeros = "00" * 128 * 4
    if postgres_mode():
        url = new_database()
        raw_sql(url, schema.joinpath("pg_schema_v1.sql").read_text(),
                "CREATE TABLE facetrail_schema (version INTEGER NOT NULL)",
                "INSERT INTO facetrail_schema (version) VALUES (1)")
        embedding = f"decode('{zeros}', 'hex')"
    else:
        path = tmp_path / "store.db"
        url = f"sqlite:///{path}"
        with sqlite3.connect(path) as db:
            db.executescript(schema.joinpath("schema_v1.sql").read_text())
            db.execute("PRAGMA user_version=1")
        db.close()
        embedding = f"X'{zeros}'"
    raw_sql(url, "INSERT INTO models (key, info, created_at) VALUES ('m', '{}', 't')",
            "INSERT INTO images (sha256, model_id, width, height, format, bytes, face_count,"
            " created_at) VALUES ('ab', 1, 10, 10, 'JPEG', 1, 1, 't')",
            "INSERT INTO faces (image_id, model_id, detector, ordinal, x, y, w, h, landmarks,"
            " det_score, quality, sharpness, embedding) VALUES (1, 1, 'hog', 0, 0, 0, 5, 5,"
            f" '[]', 1, 1, 1, {embedding})")
    store = open_store(url)
    try:
        assert store.faces([1])[1].runtime == "dlib"
    finally:
        store.close()
