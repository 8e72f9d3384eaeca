"""The store protocol's contract, run against every store facetrail ships (SQLite and a real
PostgreSQL server). A new store passes this suite or it is not done."""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facetrail.audit import AuditEvent, utc_now, verify
from facetrail.errors import ConflictError, NotFoundError, PolicyError, StoreError
from facetrail.faces.base import ModelInfo
from facetrail.records import DetectedFace, ImageAnalysis, ProbeFace, Provenance
from facetrail.store import AuditQuery, ProbeRow, RunCounts, SourceSpec, Store, open_store
from stores import BACKENDS, drop_audit_guards, new_store_url, raw_sql

MODEL = ModelInfo("test", "0" * 16, 4, "none", "unit", "cosine", "det@1")
OTHER = ModelInfo("other", "1" * 16, 4, "none", "unit", "cosine", "det@1")


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return new_store_url(request.param, tmp_path)


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    store = open_store(url)
    yield store
    store.close()


def spec(name: str = "src", uri: str = "/data/src", retention: int | None = 30) -> SourceSpec:
    return SourceSpec(name, "folder", uri, "warrant 17", "robbery", retention)


def face(seed: int, size: int = 40) -> DetectedFace:
    vector = np.random.default_rng(seed).normal(size=4).astype(np.float32)
    return DetectedFace(
        box=(seed, 2 * seed, size, size), landmarks=((1.0, 2.0), (3.0, 4.0)), det_score=0.9,
        quality=0.1 * (seed % 10), sharpness=12.5, embedding=vector / np.linalg.norm(vector),
        runtime="onnx",
    )


def analysis(sha: str, *faces: DetectedFace) -> ImageAnalysis:
    return ImageAnalysis(sha256=sha, width=640, height=480, format="JPEG", faces=faces)


def found(location: str, fingerprint: str | None = "fp1") -> tuple[Provenance, str | None]:
    return (Provenance(location, source_url="https://example.org/a.jpg",
                       page_urls=("https://example.org/",), captured_at="2024-01-02T03:04:05Z",
                       title="t", record_id="r1"), fingerprint)


def ingest_one(store: Store, sha: str = "a" * 64, location: str = "/data/src/a.jpg",
               faces: int = 2) -> tuple[int, int, int]:
    """(source id, model id, run id) after one image with ``faces`` faces was stored."""
    try:
        source = store.get_source("src")
    except NotFoundError:
        source = store.add_source(spec(), "tester")
    model_id = store.model_id(MODEL)
    run_id = store.start_run(source.id, [source.uri], "tester", "tester", utc_now())
    store.add_image(analysis(sha, *(face(i + 1) for i in range(faces))), 1234, model_id,
                    "det", source.id, run_id, [found(location)])
    return source.id, model_id, run_id


# -- sources -----------------------------------------------------------------------------------
def test_sources_are_kept_with_their_basis_and_refused_twice(store: Store) -> None:
    row = store.add_source(spec(), "alice")
    assert (row.name, row.lawful_basis, row.purpose, row.retention_days, row.created_by) == (
        "src", "warrant 17", "robbery", 30, "alice")
    assert store.get_source("src") == row and store.list_sources() == [row]
    with pytest.raises(ConflictError):
        store.add_source(spec(), "alice")
    with pytest.raises(NotFoundError):
        store.get_source("nope")


def test_the_store_itself_refuses_a_source_without_a_lawful_basis(store: Store) -> None:
    with pytest.raises(PolicyError):
        store.add_source(SourceSpec("x", "folder", "/x", "  ", "p", None), "alice")
    with pytest.raises(PolicyError):
        store.set_retention(store.add_source(spec(), "a").name, 0)


def test_retention_changes_and_roots_grow_with_ingest_paths(store: Store) -> None:
    source = store.add_source(spec(), "alice")
    assert store.set_retention("src", 7).retention_days == 7
    assert store.set_retention("src", None).retention_days is None
    store.start_run(source.id, ["/data/extra"], "alice", "tester", utc_now())
    assert store.source_roots("src") == ["/data/src", "/data/extra"]


# -- models, settings, calibrations ----------------------------------------------------------
def test_models_settings_and_calibrations(store: Store) -> None:
    first = store.model_id(MODEL)
    assert store.model_id(MODEL) == first != store.model_id(OTHER)
    assert [key for _, key, _ in store.models()] == [MODEL.key, OTHER.key]
    assert store.setting("active_model") is None
    store.set_setting("active_model", "a")
    store.set_setting("active_model", "b")
    assert store.setting("active_model") == "b"
    store.add_user_model("mine", '{"x": 1}', "alice")
    assert store.user_models() == {"mine": '{"x": 1}'}
    with pytest.raises(ConflictError):
        store.add_user_model("mine", "{}", "alice")
    assert store.calibration(first) is None
    store.save_calibration(first, "fixtures", '{"v": 1}', "alice")
    store.save_calibration(first, "fixtures", '{"v": 2}', "alice")
    assert store.calibration(first) == '{"v": 2}'
    assert store.calibration(store.model_id(OTHER)) is None


# -- ingest ----------------------------------------------------------------------------------
def test_an_image_is_stored_whole_with_exact_embeddings(store: Store) -> None:
    source_id, model_id, run_id = ingest_one(store)
    assert store.has_image("a" * 64, model_id) and not store.has_image("b" * 64, model_id)
    assert store.seen(source_id, "/data/src/a.jpg", "fp1")
    assert not store.seen(source_id, "/data/src/a.jpg", "fp2")
    assert store.face_count(model_id)[0] == 2
    ids, vectors = next(store.iter_embeddings(model_id))
    assert vectors.dtype == np.float32
    assert np.array_equal(vectors, np.stack([face(1).embedding, face(2).embedding]))
    rows = store.faces([int(i) for i in ids])
    first = rows[int(ids[0])]
    assert first.box == (1, 2, 40, 40) and first.runtime == "onnx"
    assert first.image.sha256 == "a" * 64 and first.image.width == 640
    (seen_at,) = first.appearances
    assert (seen_at.source, seen_at.location, seen_at.page_urls, seen_at.captured_at) == (
        "src", "/data/src/a.jpg", ("https://example.org/",), "2024-01-02T03:04:05Z")
    assert store.image_appearances("a" * 64) == [seen_at]
    store.finish_run(run_id, "completed", RunCounts(items=1, images_new=1, faces=2))



def test_runs_are_listed_with_their_paths_status_and_counts(store: Store) -> None:
    source = store.add_source(spec(), "alice")
    first = store.start_run(source.id, ["/data/src"], "alice", "host-a:1:x", utc_now())
    counts = RunCounts(items=3, images_new=2, duplicates=1, skipped=0, faces=4, errors=1)
    store.finish_run(first, "completed", counts)
    second = store.start_run(source.id, ["/data/src/more", "/data/x"], "bob", "host-b:2:y",
                             utc_now())
    done, running = store.runs()
    assert (done.id, done.source, done.paths, done.status, done.counts) == (
        first, "src", ("/data/src",), "completed", counts)
    assert done.finished_at is not None and done.started_at <= done.finished_at
    assert (running.id, running.paths, running.status, running.finished_at) == (
        second, ("/data/src/more", "/data/x"), "running", None)
    assert running.counts == RunCounts()


def test_embeddings_come_in_batches_after_an_id(store: Store) -> None:
    for i in range(5):
        ingest_one(store, sha=f"{i}" * 64, location=f"/data/src/{i}.jpg", faces=1)
    model_id = store.model_id(MODEL)
    batches = list(store.iter_embeddings(model_id, batch=2))
    assert [len(ids) for ids, _ in batches] == [2, 2, 1]
    all_ids = np.concatenate([ids for ids, _ in batches])
    assert list(all_ids) == sorted(all_ids)
    after = list(store.iter_embeddings(model_id, after_id=int(all_ids[2])))
    assert list(np.concatenate([ids for ids, _ in after])) == list(all_ids[3:])
    assert store.face_count(model_id) == (5, int(all_ids[-1]))


def test_a_second_location_of_an_image_is_an_appearance(store: Store) -> None:
    source_id, model_id, run_id = ingest_one(store)
    assert store.add_appearances("a" * 64, model_id, source_id, run_id,
                                 [found("/data/src/copy.jpg")]) == 1
    assert [a.location for a in store.image_appearances("a" * 64)] == [
        "/data/src/a.jpg", "/data/src/copy.jpg"]
    stats = store.stats(model_id)
    assert (stats.images, stats.appearances, stats.faces, stats.sources) == (1, 2, 2, 1)
    per = stats.source("src")
    assert per is not None and (per.images, per.appearances, per.errors) == (1, 2, 0)
    assert stats.faces_by_runtime == {"onnx": 2}


def test_errors_are_recorded_once_and_cleared_by_a_success(store: Store) -> None:
    source = store.add_source(spec(), "alice")
    run_id = store.start_run(source.id, [], "alice", "tester", utc_now())
    store.record_error(source.id, run_id, "/data/src/a.jpg", "bad_image", "truncated")
    store.record_error(source.id, run_id, "/data/src/a.jpg", "bad_image", "truncated again")
    (error,) = store.errors("src")
    assert (error.location, error.code, error.reason) == (
        "/data/src/a.jpg", "bad_image", "truncated again")
    ingest_one(store)
    assert store.errors() == []


def test_archive_errors_are_cleared_under_a_path_taken_literally(store: Store) -> None:
    source = store.add_source(spec(), "alice")
    run_id = store.start_run(source.id, [], "alice", "tester", utc_now())
    for location in ("/w/a_1%.warc#after-10", "/w/ab1x.warc#after-10", "/w/a_1%.warc#3"):
        store.record_error(source.id, run_id, location, "bad_archive", "cut")
    store.clear_archive_errors(source.id, "/w/a_1%.warc")
    assert sorted(e.location for e in store.errors()) == ["/w/a_1%.warc#3",
                                                          "/w/ab1x.warc#after-10"]


def test_a_gallery_moves_to_another_model_with_its_appearances(store: Store) -> None:
    source_id, model_id, run_id = ingest_one(store)
    ingest_one(store, sha="c" * 64, location="/data/src/c.jpg", faces=1)
    other = store.model_id(OTHER)
    assert store.count_to_move(model_id, other) == 2
    (image_id, sha, seen_at), _ = store.images_to_move(model_id, other)
    store.add_moved_image(analysis(sha, face(9)), 99, other, "det", model_id)
    assert store.count_to_move(model_id, other) == 1
    assert store.image_count(other) == 1 and store.image_count(model_id) == 2
    assert store.stats(other).appearances == len(seen_at) == 1
    assert store.images_to_move(model_id, other, after=image_id)[0][1] == "c" * 64


def test_faces_of_a_source_by_location(store: Store) -> None:
    ingest_one(store)
    located = store.source_faces("src", store.model_id(MODEL))
    assert [(f.location, f.ordinal) for f in located] == [("/data/src/a.jpg", 0),
                                                         ("/data/src/a.jpg", 1)]
    assert np.array_equal(located[1].embedding, face(2).embedding)
    assert store.searchable_faces(store.model_id(MODEL), 0.15) == 1


# -- accounts --------------------------------------------------------------------------------
def test_users_tokens_and_sessions(store: Store) -> None:
    user = store.add_user("ann", "analyst", "admin")
    with pytest.raises(ConflictError):
        store.add_user("ann", "analyst", "admin")
    with pytest.raises(PolicyError):
        store.add_user("bob", "emperor", "admin")
    token_id = store.add_token(user.id, "h1")
    credential = store.credential("h1")
    assert credential is not None and credential.user.name == "ann"
    assert credential.token_id == token_id and store.get_user("ann").active_tokens == 1
    store.add_session("s1", token_id, "csrf1", "2999-01-01T00:00:00Z")
    session = store.session("s1", "2026-01-01T00:00:00Z")
    assert session is not None and session.csrf == "csrf1"
    assert store.session("s1", "3000-01-01T00:00:00Z") is None  # expired
    store.end_session("s1")
    assert store.session("s1", "2026-01-01T00:00:00Z") is None
    store.add_session("s2", token_id, "csrf2", "2999-01-01T00:00:00Z")
    assert store.revoke_tokens(user.id) == 1
    assert store.credential("h1") is None
    assert store.session("s2", "2026-01-01T00:00:00Z") is None
    assert [u.name for u in store.list_users()] == ["ann"]


# -- cases -----------------------------------------------------------------------------------
def test_searches_candidates_and_reviews(store: Store) -> None:
    ingest_one(store)
    org = store.add_org("north", "admin")
    ann = store.add_user("ann", "analyst", "admin", org_id=org.id)
    rev = store.add_user("rev", "reviewer", "admin")
    probe = ProbeRow("p" * 64, 10, 64, 48, "PNG", (ProbeFace((1, 2, 30, 30), 0.9, 0.5),),
                     "2026-01-01T00:00:00Z", "ann")
    store.add_probe(probe)
    store.add_probe(probe)  # kept once
    assert store.get_probe("p" * 64) == probe
    with pytest.raises(NotFoundError):
        store.get_probe("q" * 64)
    audit_id = store.append_audit(AuditEvent(actor="ann", action="search", case_ref="C1"))
    ids = [int(i) for i in next(store.iter_embeddings(store.model_id(MODEL)))[0]]
    search_id = store.add_search(ann.id, "ann", "C1", "robbery", "p" * 64, 0, audit_id,
                                 {"candidates": len(ids)},
                                 [(rank, fid, 0.9 - rank / 10) for rank, fid in enumerate(ids)],
                                 org_id=org.id)
    row = store.get_search(search_id)
    assert (row.actor, row.case_ref, row.candidates, row.pending) == ("ann", "C1", 2, 2)
    assert row.result == {"candidates": 2} and row.org_id == org.id
    assert [s.id for s in store.list_searches(pending_for="rev")] == [search_id]
    assert store.list_searches(pending_for="ann") == []
    assert [s.id for s in store.list_searches(org_id=org.id)] == [search_id]
    assert store.list_searches(org_id=1) == []
    review = store.add_review(search_id, ids[0], rev.id, "rev", "confirm", "same scar")
    assert (review.reviewer, review.decision, review.note) == ("rev", "confirm", "same scar")
    with pytest.raises(ConflictError):
        store.add_review(search_id, ids[0], rev.id, "rev", "reject", "")
    with pytest.raises(NotFoundError):
        store.add_review(search_id, 10**9, rev.id, "rev", "confirm", "")
    local = store.add_search(None, "operator", "C1", "robbery", "p" * 64, 0, audit_id, {},
                             [(0, ids[0], 0.9)])
    assert store.get_search(local).user_id is None and store.get_search(local).org_id == 1
    assert store.get_search(search_id).pending == 1
    assert [r.id for r in store.reviews([search_id])] == [review.id]
    assert store.reviews([]) == []
    assert [s.id for s in store.list_searches(case_ref="C1")] == [local, search_id]
    assert store.list_searches(case_ref="C2") == []


# -- jobs ------------------------------------------------------------------------------------
def test_jobs_record_attempts_runs_and_their_end(store: Store) -> None:
    source = store.add_source(spec(), "alice")
    job = store.add_job(source.id, ["/data/src/x"], "alice")
    assert (job.status, job.paths, job.attempts, job.run_ids) == ("queued", ("/data/src/x",),
                                                                  0, ())
    job = store.update_job(job.id, status="running", started=True)
    first_start = job.started_at
    job = store.update_job(job.id, run_id=5)
    job = store.update_job(job.id, run_id=6, progress={"items": 3})
    assert (job.attempts, job.run_ids, job.progress) == (1, (5, 6), {"items": 3})
    assert [j.id for j in store.list_jobs(unfinished=True)] == [job.id]
    job = store.update_job(job.id, started=True, status="completed")
    assert job.started_at == first_start and job.finished_at is not None
    assert store.list_jobs(unfinished=True) == [] and store.list_jobs()[0].attempts == 2
    with pytest.raises(NotFoundError):
        store.get_job(10**6)


def test_a_job_has_one_holder_until_its_lease_goes_stale(store: Store) -> None:
    source = store.add_source(spec(), "alice")
    job = store.add_job(source.id, [], "alice")
    assert (job.holder, job.heartbeat_at) == (None, None)
    past, future = "2000-01-01T00:00:00.000000Z", "2999-01-01T00:00:00.000000Z"
    claimed = store.claim_job(job.id, "a", past)
    assert claimed is not None and (claimed.status, claimed.holder, claimed.attempts) == (
        "running", "a", 1)
    assert claimed.heartbeat_at is not None and claimed.started_at is not None
    # Held with a fresh heartbeat: nobody else gets it, and only its holder renews it.
    assert store.claim_job(job.id, "b", past) is None
    assert store.renew_job(job.id, "a") and not store.renew_job(job.id, "b")
    # A holder known to be dead is taken over whatever its heartbeat.
    assert store.claim_job(job.id, "b", past, gone="nobody") is None
    taken = store.claim_job(job.id, "b", past, gone="a")
    assert taken is not None and (taken.holder, taken.attempts) == ("b", 2)
    assert not store.renew_job(job.id, "a")  # "a" lost it: it must stop
    # A heartbeat older than stale_before is a dead runner's.
    taken = store.claim_job(job.id, "c", future)
    assert taken is not None and taken.holder == "c" and taken.started_at == claimed.started_at
    # A released lease is claimable at once; releasing someone else's does nothing.
    store.release_job(job.id, "b")
    assert store.get_job(job.id).heartbeat_at is not None
    store.release_job(job.id, "c")
    assert store.get_job(job.id).heartbeat_at is None
    again = store.claim_job(job.id, "d", past)
    assert again is not None and again.holder == "d" and again.attempts == 4
    # Finished or cancelled jobs are never claimed, and their lease is not renewed.
    store.update_job(job.id, status="cancelled")
    assert not store.renew_job(job.id, "d")
    assert store.claim_job(job.id, "e", future) is None
    assert store.get_job(job.id).holder == "d"  # who ran it last stays on the record
    with pytest.raises(NotFoundError):
        store.claim_job(10**6, "a", past)


def _claim(url: str, job_id: int, holder: str, go: Any, won: Any) -> None:
    store = open_store(url)
    try:
        go.wait()
        if store.claim_job(job_id, holder, "2000-01-01T00:00:00.000000Z") is not None:
            won.put(holder)
    finally:
        store.close()


def test_of_runners_claiming_a_job_at_once_one_gets_it(url: str) -> None:
    store = open_store(url)
    try:
        job = store.add_job(store.add_source(spec(), "alice").id, [], "alice")
        context = multiprocessing.get_context("spawn")
        go, won = context.Event(), context.Queue()
        procs = [context.Process(target=_claim, args=(url, job.id, f"r{k}", go, won))
                 for k in range(4)]
        for proc in procs:
            proc.start()
        time.sleep(3)  # every runner has opened its store and waits
        go.set()
        for proc in procs:
            proc.join(timeout=120)
            assert proc.exitcode == 0
        winner = won.get(timeout=10)
        assert store.get_job(job.id).holder == winner
        assert store.get_job(job.id).attempts == 1
    finally:
        store.close()


# -- audit -----------------------------------------------------------------------------------
def test_audit_events_chain_and_filter(store: Store) -> None:
    for i in range(4):
        store.append_audit(AuditEvent(actor=f"u{i % 2}", action="search", case_ref=f"C{i}",
                                      details={"n": i}, at=f"2026-01-0{i + 1}T00:00:00Z"))
    rows = store.audit_rows()
    assert [r.id for r in rows] == [1, 2, 3, 4] and verify(rows).ok
    assert [r.id for r in store.audit_rows(AuditQuery(actor="u1"))] == [2, 4]
    assert [r.id for r in store.audit_rows(AuditQuery(since="2026-01-02T00:00:00Z",
                                                      until="2026-01-04T00:00:00Z"))] == [2, 3]
    assert [r.id for r in store.audit_rows(AuditQuery(after_id=2, limit=1))] == [3]
    assert rows[2].event.details == {"n": 2} and store.stats(1).searches == 4


def test_the_audit_table_refuses_changes(store: Store, url: str) -> None:
    store.append_audit(AuditEvent(actor="a", action="x"))
    for statement in ("UPDATE audit SET actor='b'", "DELETE FROM audit"):
        with pytest.raises(Exception, match="append-only"):
            raw_sql(url, statement)
    raw_sql(url, *drop_audit_guards(url), "UPDATE audit SET actor='b'")
    assert not verify(store.audit_rows()).ok


def _append_many(url: str, who: str, n: int) -> None:
    store = open_store(url)
    try:
        for i in range(n):
            store.append_audit(AuditEvent(actor=who, action="test", details={"i": i}))
    finally:
        store.close()


def test_concurrent_appenders_in_separate_processes_keep_one_chain(store: Store,
                                                                   url: str) -> None:
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_append_many, args=(url, f"p{k}", 25)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    rows = store.audit_rows()
    assert len(rows) == 100 and verify(rows).ok
    assert sorted(r.event.actor for r in rows).count("p3") == 25


# -- schema ----------------------------------------------------------------------------------
def test_reopening_keeps_everything_and_a_newer_schema_is_refused(url: str) -> None:
    store = open_store(url)
    store.add_source(spec(), "alice")
    store.close()
    store = open_store(url)
    assert [s.name for s in store.list_sources()] == ["src"]
    store.close()
    if url.startswith("sqlite:"):
        raw_sql(url, "PRAGMA user_version=99")
    else:
        raw_sql(url, "UPDATE facetrail_schema SET version=99")
    with pytest.raises(StoreError, match="newer than this facetrail"):
        open_store(url)


def test_an_unknown_store_url_is_refused() -> None:
    from facetrail.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown store URL scheme"):
        open_store("mysql://x/y")
    with pytest.raises(ConfigError, match="sqlite:///PATH"):
        open_store("sqlite://")


# -- organisations ---------------------------------------------------------------------------
def test_organisations_own_and_share_sources(store: Store) -> None:
    assert [o.name for o in store.list_orgs()] == ["default"]
    north = store.add_org("north", "admin")
    south = store.add_org("south", "admin")
    with pytest.raises(ConflictError):
        store.add_org("north", "admin")
    with pytest.raises(NotFoundError):
        store.get_org("west")
    a = store.add_source(SourceSpec("a", "folder", "/a", "basis", "purpose", 30,
                                    org_id=north.id), "admin")
    b = store.add_source(SourceSpec("b", "folder", "/b", "basis", "purpose", 30,
                                    org_id=south.id), "admin")
    assert (a.org, a.org_id, store.get_source("b").org) == ("north", north.id, "south")
    assert store.visible_source_ids(north.id) == [a.id]
    share = store.share_source(b.id, north.id, "data-sharing agreement 7", "joint op", "admin")
    assert (share.source, share.org, share.lawful_basis) == ("b", "north",
                                                            "data-sharing agreement 7")
    with pytest.raises(ConflictError):
        store.share_source(b.id, north.id, "again", "again", "admin")
    with pytest.raises(PolicyError):
        store.share_source(a.id, south.id, " ", "joint op", "admin")
    assert store.visible_source_ids(north.id) == [a.id, b.id]
    assert store.visible_source_ids(south.id) == [b.id]
    assert [(x.source, x.org) for x in store.shares()] == [("b", "north")]
    assert store.unshare_source(b.id, north.id) and not store.unshare_source(b.id, north.id)
    assert store.visible_source_ids(north.id) == [a.id]
    user = store.add_user("nina", "analyst", "admin", org_id=north.id)
    assert (user.org, store.get_user("nina").org_id) == ("north", north.id)
    assert store.add_user("olga", "oversight", "admin").org == "default"


def test_an_image_stored_meanwhile_by_another_run_is_not_new_and_gets_the_appearance(
        store: Store) -> None:
    """Two runs that analysed the same bytes at once: the second add_image says so, and stores
    its appearance but no second set of faces."""
    _, model_id, _ = ingest_one(store)  # source 'src', image a…a with 2 faces
    other = store.add_source(spec("other", "/data/other"), "tester")
    run_id = store.start_run(other.id, [], "tester", "tester", utc_now())
    again = store.add_image(analysis("a" * 64, face(1), face(2)), 1234, model_id, "det",
                            other.id, run_id, [found("/data/other/a.jpg")])
    assert again is False
    assert store.stats(model_id).faces == 2
    assert [a.source for a in store.image_appearances("a" * 64)] == ["other", "src"]
    assert store.add_image(analysis("b" * 64, face(3)), 10, model_id, "det", other.id, run_id,
                           [found("/data/other/b.jpg")]) is True


def test_faces_of_sources_for_filtered_searches(store: Store) -> None:
    ingest_one(store)  # source 'src', 2 faces
    other = store.add_source(spec("other", "/data/other"), "tester")
    model_id = store.model_id(MODEL)
    run_id = store.start_run(other.id, [], "tester", "tester", utc_now())
    store.add_image(analysis("d" * 64, face(7)), 10, model_id, "det", other.id, run_id,
                    [found("/data/other/d.jpg")])
    # The first image seen by the other source too: its faces belong to both.
    store.add_appearances("a" * 64, model_id, other.id, run_id, [found("/data/other/a.jpg")])
    src = store.get_source("src").id
    ids = store.source_face_ids([src], model_id)
    both = store.source_face_ids([src, other.id], model_id)
    assert ids.dtype == np.int64 and len(ids) == 2 and len(both) == 3
    assert list(both) == sorted(both) and set(ids) < set(both)
    assert len(store.source_face_ids([other.id], model_id)) == 3
    assert len(store.source_face_ids([], model_id)) == 0


def test_probes_remember_who_uploaded_them(store: Store) -> None:
    north = store.add_org("north", "admin")
    store.add_probe(ProbeRow("p" * 64, 10, 64, 48, "PNG", (), "2026-01-01T00:00:00Z", "ann"))
    store.add_probe_org("p" * 64, north.id)
    store.add_probe_org("p" * 64, north.id)
    assert store.probe_org_ids("p" * 64) == {north.id}


def test_audit_events_carry_their_organisation(store: Store) -> None:
    store.append_audit(AuditEvent(actor="a", action="x", org="north"))
    store.append_audit(AuditEvent(actor="b", action="x"))
    rows = store.audit_rows()
    assert [r.event.org for r in rows] == ["north", None] and verify(rows).ok
    assert [r.id for r in store.audit_rows(AuditQuery(org="north"))] == [1]


# -- leases of ingest runs -------------------------------------------------------------------
def test_a_source_is_ingested_by_one_holder_at_a_time(store: Store) -> None:
    source = store.add_source(spec(), "alice")
    other = store.add_source(spec("other", "/data/other"), "alice")
    first = store.start_run(source.id, [], "alice", "host-a:1:x", "0")
    with pytest.raises(ConflictError, match="host-a:1:x"):
        store.start_run(source.id, [], "bob", "host-b:2:y", "0")
    store.start_run(other.id, [], "bob", "host-b:2:y", "0")  # another source: no conflict
    assert store.renew_run(first, "host-a:1:x")
    assert not store.renew_run(first, "host-b:2:y")
    # Its holder stops renewing: once the lease ran out, the run was interrupted.
    second = store.start_run(source.id, [], "bob", "host-b:2:y", "9999")
    assert second != first and not store.renew_run(first, "host-a:1:x")
    store.finish_run(second, "completed", RunCounts())
    assert not store.renew_run(second, "host-b:2:y")
    third = store.start_run(source.id, [], "carol", "host-c:3:z", "0")  # a finished run: none
    assert store.running_holders() == ["host-c:3:z"]  # "9999": every older lease ran out
    assert store.interrupt_runs(["host-c:3:z"]) == 1 and not store.renew_run(third, "host-c:3:z")
    assert store.running_holders() == [] and store.interrupt_runs([]) == 0


# -- rate limits -------------------------------------------------------------------------------
def test_rate_events_hold_a_limit_per_key_in_a_sliding_window(store: Store) -> None:
    t = 1_000_000.0
    assert [store.take_rate("search", "ann", 3, 10.0, t + i) for i in range(3)] == [None] * 3
    assert store.take_rate("search", "ann", 3, 10.0, t + 4) == pytest.approx(6.0)
    assert store.take_rate("search", "bob", 3, 10.0, t + 4) is None  # another key
    assert store.take_rate("probe", "ann", 3, 10.0, t + 4) is None  # another kind
    assert store.take_rate("search", "ann", 3, 10.0, t + 10.5) is None  # the first left
    assert store.rate_wait("login_failure", "1.2.3.4", 2, 60.0, t) is None
    assert store.take_rate("login_failure", "1.2.3.4", 2, 60.0, t) is None
    assert store.take_rate("login_failure", "1.2.3.4", 2, 60.0, t + 1) is None
    assert store.rate_wait("login_failure", "1.2.3.4", 2, 60.0, t + 2) == pytest.approx(58.0)
    assert store.rate_wait("login_failure", "1.2.3.4", 2, 60.0, t + 61) is None


def _take(url: str, go: Any, passed: Any) -> None:
    store = open_store(url)
    try:
        go.wait(60)
        passed.put(sum(store.take_rate("search", "ann", 12, 600.0, time.time()) is None
                       for _ in range(10)))
    finally:
        store.close()


def test_processes_at_the_limit_at_once_pass_it_no_more_than_the_limit(url: str) -> None:
    store = open_store(url)  # migrated before the processes race
    store.close()
    context = multiprocessing.get_context("spawn")
    go, passed = context.Event(), context.Queue()
    procs = [context.Process(target=_take, args=(url, go, passed)) for _ in range(4)]
    for proc in procs:
        proc.start()
    time.sleep(3)
    go.set()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    assert sum(passed.get(timeout=10) for _ in procs) == 12


def test_the_optout_version_changes_with_every_change_of_the_templates(store: Store) -> None:
    model_id = store.model_id(MODEL)
    vector = np.ones(4, np.float32) / 2
    versions = [store.optout_version(model_id)]
    store.add_optout("A", "", 1, "tests", 1, [(model_id, "aa" * 32, vector)])
    versions.append(store.optout_version(model_id))
    store.add_optout("B", "", 1, "tests", 1, [(model_id, "bb" * 32, vector)])
    versions.append(store.optout_version(model_id))
    store.remove_optout("B")  # the newest: its id may be given again
    versions.append(store.optout_version(model_id))
    time.sleep(0.01)
    store.add_optout("B", "", 1, "tests", 1, [(model_id, "cc" * 32, -vector)])
    versions.append(store.optout_version(model_id))
    store.remove_optout("A")
    versions.append(store.optout_version(model_id))
    # Each change gives another version (after the removal of B the templates are again those
    # after the addition of A, and so may be their version).
    assert all(a != b for a, b in itertools.pairwise(versions)), versions
    assert store.optout_version(store.model_id(OTHER)) == versions[0]  # another model's
