"""Erasure leaves no trace, checked as an auditor would: after erasing faces (by id, by image,
by source, by a photo of the person), no file under the data directory, nor under the
PostgreSQL server's data directory, holds the erased embeddings (whole, or any 64 bytes of
them, or written out as hex or base64), the erased photos, or their thumbnails and crops; the
audit log still verifies and names what went without holding it; and the index holds what an
index built afresh from the store holds.

The photos are the fixture people's, each re-encoded with a little noise of its own, so that
their embeddings are this test's alone: other databases on the same PostgreSQL server (the
suite's other tests) hold the unchanged fixtures' embeddings.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import facetrail
from conftest import PEOPLE
from facetrail import imaging
from facetrail.engine import Facetrail
from facetrail.index import open_index
from facetrail.settings import Settings
from facetrail.store import AuditQuery
from stores import new_database, postgres_url, raw_sql

TARGET = "Angelina_Jolie"
PROBE = "Angelina_Jolie_0003.jpg"
"""Held out of the gallery: the kept search's probe, and the photo of an erasure by photo."""
GALLERY = (TARGET, "Joseph_Biden", "Yoko_Ono", "Sheryl_Crow", "Gwyneth_Paltrow", "David_Wells")
EXTRA = ("Recep_Tayyip_Erdogan", "Yashwant_Sinha")
"""A second source: the one an erasure by source removes."""
TIERS: dict[str, dict[str, Any]] = {
    "flat": {},
    "sq8": {"index_exact_max_faces": 10, "index_codes": "sq8", "index_recall_floor": 0.0},
    "pq": {"index_exact_max_faces": 10, "index_codes": "pq", "index_recall_floor": 0.0},
}
"""Settings forcing each index tier on a gallery of some sixty faces (the approximate tiers'
recall is not what these tests judge)."""
KINDS = ("face", "image", "source", "photo")
SLICE = 64
REASON = "request of the person in the photo"


def noisy_copy(source: Path, target: Path, rng: np.random.Generator) -> None:
    pixels = np.asarray(Image.open(source).convert("RGB"), dtype=np.int16)
    pixels = np.clip(pixels + rng.integers(-2, 3, pixels.shape), 0, 255).astype(np.uint8)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(target, "JPEG", quality=95)


@dataclass
class Needles:
    """What must not be found: name -> bytes."""

    items: dict[str, bytes] = field(default_factory=dict)

    def embedding(self, face_id: int, vector: np.ndarray) -> None:
        raw = np.ascontiguousarray(vector, "<f4").tobytes()
        assert len(raw) == 512  # SFace: 128 float32
        self.items[f"face {face_id}: embedding"] = raw
        for start in range(0, len(raw), SLICE):  # any 64 bytes of it: a partial copy
            self.items[f"face {face_id}: embedding[{start}:{start + SLICE}]"] = (
                raw[start : start + SLICE])
        self.items[f"face {face_id}: embedding as hex"] = raw[:SLICE].hex().encode()
        self.items[f"face {face_id}: embedding as base64"] = base64.b64encode(raw)[:88]

    def add(self, name: str, data: bytes) -> None:
        assert len(data) >= SLICE
        self.items[name] = data


def scan(root: Path, needles: Needles) -> list[str]:
    """Every (file, needle) where a needle's bytes occur in a file under ``root``."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            data = path.read_bytes()
        except (FileNotFoundError, PermissionError):  # a server's file gone meanwhile
            continue
        for name, needle in needles.items.items():
            at = data.find(needle)
            if at >= 0:
                found.append(f"{path.relative_to(root)} @{at}: {name}")
    return found


@dataclass
class World:
    engine: Facetrail
    photos: Path
    probe: bytes
    overrides: dict[str, Any]
    store_url: str


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """A gallery of fixture people (``people``) and two more (``extra``), ingested from noisy
    copies, in the tier ``request.param`` = (store, tier) asks for."""
    backend, tier = request.param
    rng = np.random.default_rng(uuid.uuid4().int)
    photos = tmp_path / "photos"
    for name in GALLERY:
        for path in sorted((PEOPLE / name).glob("*.jpg")):
            target = photos / ("probe" if path.name == PROBE else "people") / name / path.name
            noisy_copy(path, target, rng)
    for name in EXTRA:
        for path in sorted((PEOPLE / name).glob("*.jpg")):
            noisy_copy(path, photos / "extra" / name / path.name, rng)
    url = (f"sqlite:///{tmp_path / 'home' / 'facetrail.db'}" if backend == "sqlite"
           else new_database())
    overrides = TIERS[tier]
    engine = facetrail.open(tmp_path / "home", workers=1, store_url=url, **overrides)
    for name in ("people", "extra"):
        engine.add_source(name, "folder", photos / name, lawful_basis="test fixtures",
                          purpose="testing", retention_days=30)
        engine.ingest(name)
    engine.index.sync()
    assert engine.index.info().kind == tier
    try:
        yield World(engine, photos, (photos / "probe" / TARGET / PROBE).read_bytes(),
                    overrides, url)
    finally:
        engine.close()


def cache_media(engine: Facetrail, face_ids: list[int]) -> list[Path]:
    """Thumbnails of the faces' images and crops of the faces, cached as the web API does."""
    from facetrail.web.media import cached_jpeg, crop, thumbnail

    made: dict[Path, None] = {}
    for face_id in face_ids:
        face = engine.face(face_id)
        sha = face.image.sha256
        data = engine.image_bytes(sha)
        thumb = engine.home / "cache" / "thumbs" / f"{sha}.jpg"
        cached_jpeg(thumb, thumbnail(engine, data))
        cut = engine.home / "cache" / "crops" / f"{face_id}-{sha[:16]}.jpg"
        cached_jpeg(cut, crop(engine, data, face.box))
        made.update({thumb: None, cut: None})
    return list(made)


def erase(world: World, kind: str, face_id: int) -> Any:
    engine = world.engine
    match kind:
        case "face":
            return engine.erase_faces([face_id], reason=REASON)
        case "image":
            return engine.erase_image(engine.face(face_id).image.sha256, reason=REASON)
        case "source":
            return engine.remove_source("extra", reason=REASON)
        case "photo":
            return engine.erase_photos([world.probe], reason=REASON)
    raise AssertionError(kind)


def stored(engine: Facetrail) -> tuple[np.ndarray, np.ndarray]:
    chunks = list(engine.store.iter_embeddings(engine.model_id))
    if not chunks:
        return np.empty(0, np.int64), np.empty((0, engine.model.dim), np.float32)
    return np.concatenate([i for i, _ in chunks]), np.concatenate([v for _, v in chunks])


def one_by_one(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    found = [index.search(queries[q : q + 1], k) for q in range(len(queries))]
    return np.concatenate([d for d, _ in found]), np.concatenate([i for _, i in found])


def check_no_trace(world: World, kind: str, scan_roots: list[Path],
                   flush: Callable[[], object] | None = None,
                   settle: Callable[[], object] | None = None) -> None:
    """Erase as ``kind`` says, and look for what went in every file under ``scan_roots``;
    ``settle`` runs before the erasure (a server's background work), ``flush`` after the
    first look, which is repeated."""
    engine = world.engine
    kept = engine.search_probes([world.probe], case_ref="E-1", purpose="erasure test",
                                threshold=-1.0, min_quality=0)
    first = kept.result.candidates[0]
    assert TARGET in {a.location.split("/")[-2] for a in first.appearances}
    face_id = first.face_id
    planned = erase_plan(world, kind, face_id)
    faces = list(planned.faces)
    assert faces and (kind != "face" or faces == [face_id])
    if kind in ("face", "image", "photo"):
        assert face_id in faces
    else:  # the other source's faces, none of the first's
        assert face_id not in faces and len(faces) >= 10
    media = cache_media(engine, faces)

    needles = Needles()
    vectors = engine.store.embeddings(faces)
    assert sorted(vectors) == sorted(faces)
    for i, vector in vectors.items():
        needles.embedding(i, vector)
    sq8_codes = sq8_encoder(engine)
    if sq8_codes is not None:
        for i, vector in vectors.items():
            needles.add(f"face {i}: SQ8 code", sq8_codes(vector))
    images = {imaging.sha256_hex(p.read_bytes()): p for p in world.photos.rglob("*.jpg")}
    shas = {engine.store.faces([i])[i].image.sha256 for i in faces}
    for sha in shas:
        needles.add(f"image {images[sha].name}", images[sha].read_bytes())
    for path in media:
        needles.add(f"cached {path.parent.name}/{path.name}", path.read_bytes())
    if settle is not None:
        settle()
    # The needles are where they should be before the erasure: the scan would see them.
    before = "\n".join(sum((scan(root, needles) for root in scan_roots), []))
    for face in faces:
        assert f"face {face}: embedding\n" in before + "\n"
    for path in media:
        assert f"cached {path.parent.name}/{path.name}" in before

    report = erase(world, kind, face_id)
    assert sorted(report.faces) == sorted(faces) and report.erasure_id is not None
    assert report.files_removed == len(media)

    assert not [step for step in report.scrubbed if step.startswith("not done")]
    leftovers = sum((scan(root, needles) for root in scan_roots), [])
    assert not leftovers, "\n".join(leftovers)
    if flush is not None:  # what a server holds in memory, written out: still nothing
        flush()
        leftovers = sum((scan(root, needles) for root in scan_roots), [])
        assert not leftovers, "\n".join(leftovers)

    # The audit log verifies, and the erasure's event names what went, not what it was.
    assert engine.verify_audit().ok
    events = engine.audit_events(AuditQuery(action="erase"))
    assert events
    event = events[-1].event
    assert event.details["face_ids"] == sorted(faces)
    assert set(event.details["image_sha256s"]) == set(report.sha256s)
    text = json.dumps(events[-1].to_json())
    for name, needle in needles.items.items():
        assert needle.decode("latin-1") not in text, name
    for vector in vectors.values():
        assert repr(float(vector[0])) not in text and repr(float(vector[1])) not in text

    check_index_is_rebuilt_from_store(world, list(vectors.values()), faces, scan_roots,
                                      needles)


def erase_plan(world: World, kind: str, face_id: int) -> Any:
    engine = world.engine
    match kind:
        case "face":
            return engine.erase_faces([face_id], reason=REASON, dry_run=True)
        case "image":
            return engine.erase_image(engine.face(face_id).image.sha256, reason=REASON,
                                      dry_run=True)
        case "source":
            return engine.remove_source("extra", reason=REASON, dry_run=True)
        case "photo":
            return engine.erase_photos([world.probe], reason=REASON, dry_run=True)
    raise AssertionError(kind)


def sq8_encoder(engine: Facetrail) -> Any:
    """The SQ8 code of a vector in the index in use, when it is the SQ8 tier."""
    if engine.index.info().kind != "sq8":
        return None
    import faiss

    path = next((engine.home / "index").rglob("*.ivf"))
    index = faiss.read_index(str(path))
    sq = faiss.downcast_index(faiss.extract_index_ivf(index)).sq

    def encode(vector: np.ndarray) -> bytes:
        return bytes(sq.compute_codes(np.ascontiguousarray(vector[None, :], "f4")).ravel())

    return encode


def check_index_is_rebuilt_from_store(world: World, erased: list[np.ndarray],
                                      faces: list[int], scan_roots: list[Path],
                                      needles: Needles) -> None:
    """The index in use holds exactly the store's faces, each with its stored vector, and
    answers as an index built afresh from the store (in another directory, with the same
    settings) does: exactly so in the exact tier; in the approximate ones, whose structures
    were trained before the erasure, nearly so, and exactly so once rebuilt."""
    engine = world.engine
    ids, vectors = stored(engine)
    index = engine.index
    assert index.size == len(ids) and not set(faces) & set(ids.tolist())
    queries = np.concatenate([vectors, np.stack(erased)])
    _, found = one_by_one(index, queries, len(ids))
    assert not set(faces) & set(found.ravel().tolist())
    distances, nearest = one_by_one(index, vectors, 1)
    np.testing.assert_array_equal(nearest[:, 0], ids)  # each stored vector, held as is
    assert np.all(distances[:, 0] < 1e-3)
    settings = Settings(home=engine.home.parent / "fresh", store_url=world.store_url,
                        **world.overrides)
    fresh = open_index(settings, engine.store, engine.model, engine.model_id)
    try:
        assert fresh.size == index.size and fresh.info().kind == index.info().kind
        d_new, i_new = one_by_one(fresh, queries, 10)
        d_old, i_old = one_by_one(index, queries, 10)
        if index.info().kind == "flat":
            np.testing.assert_array_equal(i_old, i_new)
        else:
            shared = sum(len(np.intersect1d(a, b)) for a, b in zip(i_old, i_new, strict=True))
            assert shared >= 0.9 * i_new.size
            index.rebuild()
            assert not sum((scan(root, needles) for root in scan_roots), [])
            d_old, i_old = one_by_one(index, queries, 10)
            np.testing.assert_array_equal(i_old, i_new)
        np.testing.assert_allclose(d_old, d_new, rtol=0, atol=1e-5)
    finally:
        fresh.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("world", [("sqlite", t) for t in TIERS], indirect=True,
                         ids=list(TIERS))
def test_erasure_leaves_no_trace_in_the_data_directory(world: World, kind: str) -> None:
    check_no_trace(world, kind, [world.engine.home])


@pytest.fixture
def postgres_data() -> Path:
    """The data directory of the PostgreSQL server of ``TEST_POSTGRES_URL``, which must
    delete the WAL segments it no longer needs (scripts/postgres-local.sh sets it so)."""
    url = postgres_url()
    assert raw_sql(url, "SHOW wal_recycle") == [("off",)], (
        "the PostgreSQL server keeps old WAL segments' content to reuse their files: set "
        "wal_recycle = off (docs/postgres.md)")
    return Path(str(raw_sql(url, "SHOW data_directory")[0][0]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("world", [("postgresql", "flat")], indirect=True, ids=["flat"])
def test_erasure_leaves_no_trace_on_the_postgresql_server(
    postgres_data: Path, world: World, kind: str
) -> None:
    """The store analysed first, as autovacuum does (which keeps sampled embeddings in
    ``pg_statistic``); scanned right after the erasure, and again once a checkpoint wrote out
    every page the server held in memory."""
    check_no_trace(world, kind, [world.engine.home, postgres_data],
                   flush=lambda: raw_sql(postgres_url(), "CHECKPOINT"),
                   settle=lambda: raw_sql(world.store_url, "ANALYZE", "CHECKPOINT"))


def test_the_scan_finds_a_partial_copy(tmp_path: Path) -> None:
    """The scan this file relies on finds 64 aligned bytes of an embedding (so any copy of
    127 bytes or more) anywhere in any file, and nothing in a file holding less."""
    vector = np.random.default_rng(3).normal(size=128).astype("<f4")
    needles = Needles()
    needles.embedding(7, vector)
    raw = vector.tobytes()
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "blob").write_bytes(b"x" * 1001 + raw[40:200] + b"y" * 10)
    (tmp_path / "clean").write_bytes(raw[:63] + raw[64:127])
    assert scan(tmp_path, needles) == ["a/b/blob @1025: face 7: embedding[64:128]",
                                       "a/b/blob @1089: face 7: embedding[128:192]"]
