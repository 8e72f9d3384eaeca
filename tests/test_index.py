"""The FAISS index is derived from the store: rebuilt or caught up, it answers identically."""

from __future__ import annotations

from pathlib import Path

import pytest

import facetrail
from conftest import PEOPLE, add_source, run_cli
from facetrail.audit import GENESIS, chain_hash
from facetrail.engine import Facetrail
from facetrail.errors import ConflictError, NotFoundError, PolicyError
from stores import raw_sql, store_url_of

CASE = {"case_ref": "T-2", "purpose": "test"}
PROBES = [PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg",
          PEOPLE / "Angelina_Jolie" / "Angelina_Jolie_0003.jpg"]


def answers(engine: Facetrail) -> list[list[tuple[int, float]]]:
    return [
        [(c.face_id, c.score) for c in engine.search(p.read_bytes(), top=10, **CASE).candidates]
        for p in PROBES
    ]


def test_rebuilt_and_missing_index_give_identical_results(gallery: Facetrail) -> None:
    before = answers(gallery)
    assert all(before)
    home = gallery.home
    size = gallery.index.size
    gallery.close()
    run_cli(home, "index", "rebuild")
    with facetrail.open(home) as engine:
        assert engine.index.size == size and answers(engine) == before
    for f in (home / "index").iterdir():
        f.unlink()
    with facetrail.open(home) as engine:
        assert engine.index.size == size and answers(engine) == before
    (home / "index" / next(p.name for p in (home / "index").glob("*.faiss"))).write_bytes(b"junk")
    with facetrail.open(home) as engine:
        assert answers(engine) == before


def test_index_behind_the_store_catches_up(gallery: Facetrail, tmp_path: Path) -> None:
    home = gallery.home
    size = gallery.index.size
    gallery.close()
    extra = tmp_path / "extra"
    extra.mkdir()
    from PIL import Image

    # A new image (mirrored, so new bytes) ingested by another process while the index sleeps.
    Image.open(PROBES[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(extra / "m.jpg")
    add_source(home, "extra", extra)
    run_cli(home, "ingest", "extra")
    with facetrail.open(home) as engine:
        assert engine.index.size == size + 1
        best = engine.search(PROBES[0].read_bytes(), top=3, **CASE).candidates
        assert any(a.location.endswith("m.jpg") for c in best for a in c.appearances)


def test_sources_need_lawful_basis_and_purpose(tmp_path: Path) -> None:
    with facetrail.open(tmp_path / "h") as engine:
        kwargs = {"purpose": "p", "retention_days": 1}
        with pytest.raises(PolicyError, match="lawful basis"):
            engine.add_source("s", "folder", PEOPLE, lawful_basis=" ", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(PolicyError, match="purpose"):
            engine.add_source("s", "folder", PEOPLE, lawful_basis="x", purpose="",
                              retention_days=1)
        with pytest.raises(NotFoundError):
            engine.add_source("s", "folder", tmp_path / "nope", lawful_basis="x", **kwargs)  # type: ignore[arg-type]
        engine.add_source("s", "folder", PEOPLE, lawful_basis="x", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(ConflictError):
            engine.add_source("s", "folder", PEOPLE, lawful_basis="x", **kwargs)  # type: ignore[arg-type]
    proc = run_cli(tmp_path / "h", "sources", "add", "t", "--kind", "folder", "--uri",
                   str(PEOPLE), "--purpose", "p", check=False)
    assert proc.returncode == 2 and "--lawful-basis" in proc.stderr
    proc = run_cli(tmp_path / "h", "ingest", "nope", check=False)
    assert proc.returncode == 2 and "no source named 'nope'" in proc.stderr


def test_audit_is_hash_chained_and_append_only(gallery: Facetrail) -> None:
    gallery.search(PROBES[0].read_bytes(), **CASE)
    rows = gallery.store.audit_rows()
    assert [r.event.action for r in rows][:2] == ["source.add", "ingest"]
    prev = GENESIS
    for row in rows:
        assert row.prev_hash == prev and row.hash == chain_hash(prev, row.event.canonical())
        prev = row.hash
    with pytest.raises(Exception, match="append-only"):
        raw_sql(store_url_of(gallery.home), "UPDATE audit SET actor = 'someone else'")
    assert [r.event.actor for r in gallery.store.audit_rows()] == [r.event.actor for r in rows]
