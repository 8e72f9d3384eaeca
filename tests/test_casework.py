"""Casework through the engine: searches kept as records and reviewed, by accounts and by the
local operator (the OS user of the CLI), and the store migration that made room for them."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

import pytest

from conftest import PEOPLE
from facetrail.accounts import Actor
from facetrail.audit import os_user
from facetrail.engine import Facetrail
from facetrail.errors import ConflictError, NoFaceError, OwnSearchReviewError, PolicyError
from facetrail.imaging import sha256_hex
from facetrail.store.sqlite import SQLiteStore

OBAMA = PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg"


def test_the_local_operator_searches_and_reviews_like_an_account(gallery: Facetrail) -> None:
    kept = gallery.search_probes([OBAMA.read_bytes()], case_ref="K-1", purpose="casework",
                                 top=3)
    record = kept.record
    assert (record.actor, record.user_id) == (os_user(), None)
    assert record.probe_sha256 == sha256_hex(OBAMA.read_bytes()) == kept.result.probe.sha256
    assert gallery.probe_bytes(record.probe_sha256) == OBAMA.read_bytes()
    assert record.candidates == 3 and record.audit_id == kept.result.audit_id
    face = kept.result.candidates[0].face_id

    with pytest.raises(OwnSearchReviewError):
        gallery.review(record.id, face, "confirm", "looks right")
    with pytest.raises(OwnSearchReviewError):
        gallery.search_to_review(record.id)
    assert record.id not in [s.id for s in gallery.review_queue()]

    other = Actor("rob", None)  # another OS user, on the same data directory
    assert record.id in [s.id for s in gallery.review_queue(actor=other)]
    review = gallery.review(record.id, face, "confirm", " same scar ", actor=other)
    assert (review.reviewer, review.user_id, review.note) == ("rob", None, "same scar")
    with pytest.raises(ConflictError):
        gallery.review(record.id, face, "reject", "again", actor=other)
    with pytest.raises(PolicyError, match="note"):
        gallery.review(record.id, kept.result.candidates[1].face_id, "reject", " ", actor=other)

    [shown] = gallery.case_records("K-1")
    assert shown.search.pending == 2 and shown.reviews == (review,)
    assert gallery.searches(by=os_user())[0].id == record.id
    assert gallery.searches(by="rob") == []
    event = gallery.audit_events()[-1].event
    assert (event.actor, event.action, event.case_ref) == ("rob", "review", "K-1")


def test_a_search_is_checked_before_its_probe_is_kept(gallery: Facetrail) -> None:
    kept_probes = set((gallery.home / "probes").rglob("*"))
    with pytest.raises(PolicyError, match="purpose"):
        gallery.search_probes([OBAMA.read_bytes()], case_ref="K-2", purpose=" ")
    assert set((gallery.home / "probes").rglob("*")) == kept_probes
    cat = (PEOPLE.parent / "noface" / "skimage_chelsea.jpg").read_bytes()
    with pytest.raises(NoFaceError):
        gallery.search_probes([cat], case_ref="K-2", purpose="no face")
    assert gallery.searches(case_ref="K-2") == []


def test_an_all_faces_search_keeps_each_candidate_once(gallery: Facetrail) -> None:
    group = (PEOPLE.parent / "group" / "kit_with_rose.jpg").read_bytes()
    everyone = gallery.index.size  # each probe face's list is the whole gallery
    kept = gallery.search_probes([group], case_ref="K-3", purpose="group", all_faces=True,
                                 top=everyone, threshold=-1.0, min_quality=0.0)
    assert kept.result.probe.searched_faces == (0, 1)
    assert len(kept.result.candidates) == 2 * everyone
    assert kept.record.candidates == everyone


def _v5_store(path: Path) -> None:
    """A schema-5 SQLite store with one search by an account and one review of it."""
    with sqlite3.connect(path) as db:
        for version in range(1, 6):
            db.executescript(resources.files("facetrail.store")
                             .joinpath(f"schema_v{version}.sql").read_text())
        db.execute("PRAGMA user_version=5")
        db.executescript("""
            INSERT INTO users VALUES (1, 'ann', 'analyst', 't', 'tests');
            INSERT INTO users VALUES (2, 'rob', 'reviewer', 't', 'tests');
            INSERT INTO probes VALUES ('ab', 1, 1, 1, 'JPEG', '[]', 't', 'ann');
            INSERT INTO audit VALUES (1, 't', 'ann', 'search', 'C', 'p', '{}', '0', 'h');
            INSERT INTO searches VALUES (1, 1, 'C', 'p', 'ab', 0, 1, '{}', 't');
            INSERT INTO search_candidates VALUES (1, 1, 7, 0.9);
            INSERT INTO search_candidates VALUES (1, 2, 8, 0.8);
            INSERT INTO reviews VALUES (1, 1, 7, 2, 'confirm', 'yes', 't');
        """)
    db.close()


def test_schema_6_names_every_actor_and_keeps_searches_and_reviews(tmp_path: Path) -> None:
    path = tmp_path / "facetrail.db"
    _v5_store(path)
    store = SQLiteStore(path)
    try:
        search = store.get_search(1)
        assert (search.id, search.user_id, search.actor, search.candidates, search.pending) == (
            1, 1, "ann", 2, 1)
        [review] = store.reviews([1])
        assert (review.user_id, review.reviewer, review.decision) == (2, "rob", "confirm")
        assert [s.id for s in store.list_searches(pending_for="rob")] == [1]
        assert store.list_searches(pending_for="ann") == []
        local = store.add_search(None, "root", "C", "p", "ab", 0, 1, {}, [(1, 7, 0.9)])
        store.add_review(local, 7, None, "ann", "reject", "no")
        assert store.get_search(local).user_id is None
        assert [s.id for s in store.list_searches(actor="root")] == [local]
        with pytest.raises(ConflictError):
            store.add_review(local, 7, 1, "ann", "confirm", "twice")
    finally:
        store.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (SQLiteStore.SCHEMA_VERSION,)
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert not {t for t in tables if t.startswith("v5_")}
    finally:
        db.close()
