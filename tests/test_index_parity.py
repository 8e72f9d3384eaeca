"""The same journey on both index back ends gives the same candidates: the fixture photos of
tests/data/faces/people ingested once (the session gallery), then searched with a few probes
through FAISS and through Milvus (tests/milvus_server.py), then one face erased and searched
for again at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import facetrail
from conftest import PEOPLE
from milvus_server import milvus_settings, milvus_uri  # noqa: F401 - fixtures
from stores import copy_home

CASE = {"case_ref": "T-parity", "purpose": "test"}
PROBES = [PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg",
          PEOPLE / "Angelina_Jolie" / "Angelina_Jolie_0003.jpg",
          PEOPLE / "Bruce_Springsteen" / "Bruce_Springsteen_0001.jpg"]


def candidates(engine: Any) -> list[list[tuple[int, float]]]:
    return [[(c.face_id, c.score)
             for c in engine.search(p.read_bytes(), top=10, **CASE).candidates]
            for p in PROBES]


def test_faiss_and_milvus_give_the_same_candidates(
    gallery_home: Path, tmp_path: Path, milvus_settings: dict[str, Any],  # noqa: F811
) -> None:
    found: dict[str, list[list[tuple[int, float]]]] = {}
    for backend, overrides in (("faiss", {}), ("milvus", milvus_settings)):
        home = tmp_path / backend
        copy_home(gallery_home, home)
        with facetrail.open(home, workers=1, index_backend=backend, **overrides) as engine:
            assert engine.index.info().backend == backend
            found[backend] = candidates(engine)
            # Erased, a face is not returned by the very next search.
            top = found[backend][0][0][0]
            engine.erase_faces([top], reason="parity test")
            after = candidates(engine)
            assert top not in {face for row in after for face, _ in row}
            found[backend + " after"] = after
    for key in ("", " after"):
        faiss, milvus = found["faiss" + key], found["milvus" + key]
        assert all(faiss) and [[f for f, _ in row] for row in milvus] == [
            [f for f, _ in row] for row in faiss]
        for frow, mrow in zip(faiss, milvus, strict=True):
            assert [s for _, s in mrow] == pytest.approx([s for _, s in frow], abs=1e-4)
