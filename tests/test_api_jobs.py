"""Sources and background ingest jobs over HTTP: progress, cancel, errors, resume on restart."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import PEOPLE, cli_json, run_cli
from facetrail.audit import os_user
from webserver import Server, add_users

FINAL = ("completed", "failed", "cancelled")


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    """Forty photos of the fixture people, and one file that is not an image."""
    folder = tmp_path / "collection"
    folder.mkdir()
    for photo in sorted(PEOPLE.glob("*/*.jpg"))[:40]:
        shutil.copy(photo, folder / photo.name)
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    return folder


@pytest.fixture
def big_collection(tmp_path: Path) -> Path:
    """160 photos: enough that a job is still running when the server is stopped."""
    folder = tmp_path / "big"
    folder.mkdir()
    for photo in sorted(PEOPLE.glob("*/*.jpg"))[:160]:
        shutil.copy(photo, folder / photo.name)
    return folder


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server over a new, empty home."""
    home = tmp_path / "home"
    server = Server(home, add_users(home)).start()
    try:
        yield server
    finally:
        server.stop()


def add_source(admin: httpx.Client, name: str, uri: Path) -> None:
    response = admin.post("/api/sources", json={
        "name": name, "kind": "folder", "uri": str(uri), "lawful_basis": "test fixtures",
        "purpose": "testing", "retention_days": 30})
    assert response.status_code == 201, response.text


def wait_for(admin: httpx.Client, job_id: int, until: Any, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = admin.get(f"/api/jobs/{job_id}").json()["job"]
        if until(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never got there: {job}")


def test_a_job_ingests_in_the_background_and_lists_its_errors(
    server: Server, collection: Path
) -> None:
    with server.client("admin") as admin:
        add_source(admin, "coll", collection)
        started = admin.post("/api/jobs", json={"source": "coll"})
        assert started.status_code == 202
        job = wait_for(admin, started.json()["job"]["id"], lambda j: j["status"] in FINAL)
        assert job["status"] == "completed", job
        assert job["progress"]["items"] == 41 and job["progress"]["errors"] == 1
        assert job["progress"]["images_new"] == 40 and job["attempts"] == 1
        errors = admin.get("/api/sources/coll/errors").json()["errors"]
        assert [(Path(e["location"]).name, e["code"]) for e in errors] == [
            ("broken.jpg", "bad_image")]
        listed = {s["name"]: s for s in admin.get("/api/sources").json()["sources"]}
        assert listed["coll"]["images"] == 40 and listed["coll"]["errors"] == 1
    with server.client("analyst") as analyst:
        photo = sorted(collection.glob("*.jpg"))[0]
        found = analyst.post("/api/searches/upload", files={"file": (photo.name,
                             photo.read_bytes())}, data={"case_ref": "J", "purpose": "j"})
        assert found.json()["result"]["candidates"][0]["score"] == 1.0  # indexed by the job
    with server.client("auditor") as auditor:
        actions = [e["action"] for e in auditor.get("/api/audit").json()["events"]]
    assert actions[-5:] == ["source.add", "ingest.start", "ingest", "probe.add", "search"]


def settled(admin: httpx.Client, job_id: int, quiet: float = 2.0) -> dict[str, Any]:
    """The job once it has not changed for ``quiet`` seconds (a cancelled job's runner stops
    at its next progress write)."""
    job: dict[str, Any] = admin.get(f"/api/jobs/{job_id}").json()["job"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now: dict[str, Any] = admin.get(f"/api/jobs/{job_id}").json()["job"]
        if now == job:
            return job
        job = now
    raise AssertionError(f"job {job_id} kept changing: {job}")


@pytest.mark.parametrize("kill", [True, False], ids=["killed", "stopped"])
def test_a_job_resumes_after_a_restart(server: Server, big_collection: Path,
                                       kill: bool) -> None:
    """Killed (SIGKILL) or stopped (SIGTERM: the run is interrupted cleanly), the job runs
    again when the server starts."""
    with server.client("admin") as admin:
        add_source(admin, "coll", big_collection)
        job_id = admin.post("/api/jobs", json={"source": "coll"}).json()["job"]["id"]
        wait_for(admin, job_id, lambda j: j["progress"].get("images_new", 0) >= 3)
    server.stop(kill=kill)
    server.start()
    with server.client("admin") as admin:
        job = wait_for(admin, job_id, lambda j: j["status"] in FINAL)
        assert job["status"] == "completed" and job["attempts"] == 2
        # The second run skipped what the first had stored: nothing was analysed twice.
        assert 0 < job["progress"]["images_new"] < 160
        assert job["progress"]["skipped"] + job["progress"]["images_new"] >= 160
        stats = {s["name"]: s for s in admin.get("/api/sources").json()["sources"]}
        assert stats["coll"]["images"] == 160


def test_cancel_and_retention(server: Server, collection: Path) -> None:
    with server.client("admin") as admin:
        add_source(admin, "coll", collection)
        job_id = admin.post("/api/jobs", json={"source": "coll"}).json()["job"]["id"]
        cancelled = admin.post(f"/api/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200
        job = wait_for(admin, job_id, lambda j: j["status"] in FINAL)
        assert job["status"] == "cancelled"
        again = admin.post(f"/api/jobs/{job_id}/cancel")
        assert again.status_code == 422 and again.json()["error"]["code"] == "policy_error"
        assert admin.post("/api/jobs", json={"source": "nope"}).status_code == 404

        changed = admin.patch("/api/sources/coll", json={"retention_days": 90})
        assert changed.json()["source"]["retention_days"] == 90
        assert admin.patch("/api/sources/coll", json={"retention_days": 0}).status_code == 422
        assert admin.patch("/api/sources/nope", json={"retention_days": 5}).status_code == 404
        bad_kind = admin.post("/api/sources", json={
            "name": "x", "kind": "ftp", "uri": str(collection), "lawful_basis": "b",
            "purpose": "p", "retention_days": 30})
        assert bad_kind.status_code == 422
        missing = admin.post("/api/sources", json={
            "name": "y", "kind": "folder", "uri": str(collection / "nope"),
            "lawful_basis": "b", "purpose": "p", "retention_days": 30})
        assert missing.status_code == 404
        no_retention = admin.post("/api/sources", json={
            "name": "y", "kind": "folder", "uri": str(collection), "lawful_basis": "b",
            "purpose": "p"})
        assert no_retention.status_code == 422
    with server.client("auditor") as auditor:
        events = auditor.get("/api/audit", params={"actor": "admin"}).json()["events"]
    assert [e["action"] for e in events] == [
        "source.add", "ingest.start", "ingest.cancel", "source.retention"]
    assert events[-1]["details"] == {"source": "coll", "retention_days": 90, "was": 30}


def test_the_cli_changes_retention_and_stops_jobs_as_the_web_does(
    server: Server, big_collection: Path
) -> None:
    """Retention changes and job cancels are the engine's: made on the command line, they
    are the same audit events and job records as made over HTTP, and a job running in the
    server stops when the CLI cancels it."""
    home = server.home
    with server.client("admin") as admin:
        add_source(admin, "coll", big_collection)
        assert admin.patch("/api/sources/coll", json={"retention_days": 90}).status_code == 200
        job_id = admin.post("/api/jobs", json={"source": "coll"}).json()["job"]["id"]
        wait_for(admin, job_id, lambda j: j["status"] == "running")
        cancelled = cli_json(home, "jobs", "cancel", str(job_id))
        assert isinstance(cancelled, dict) and cancelled["status"] == "cancelled"
        job = settled(admin, job_id)
        sources = {s["name"]: s for s in admin.get("/api/sources").json()["sources"]}
    assert job["progress"].get("items", 0) < 160 and sources["coll"]["images"] < 160
    assert job == cli_json(home, "jobs", "show", str(job_id))
    assert cli_json(home, "jobs", "list") == [job]
    again = run_cli(home, "jobs", "cancel", str(job_id), "--json", check=False)
    assert again.returncode == 2 and '"policy_error"' in again.stdout

    changed = cli_json(home, "sources", "retention", "coll", "60")
    assert isinstance(changed, dict) and changed["retention_days"] == 60
    assert run_cli(home, "sources", "retention", "coll", "0", check=False).returncode != 0
    with server.client("admin") as admin:
        listed = {s["name"]: s for s in admin.get("/api/sources").json()["sources"]}
    assert listed["coll"] == {**sources["coll"], "retention_days": 60}
    with server.client("auditor") as auditor:
        events = auditor.get("/api/audit").json()["events"]
    changes = [(e["actor"], e["details"]) for e in events if e["action"] == "source.retention"]
    assert changes == [("admin", {"source": "coll", "retention_days": 90, "was": 30}),
                       (os_user(), {"source": "coll", "retention_days": 60, "was": 90})]
    cancels = [(e["actor"], e["details"]) for e in events if e["action"] == "ingest.cancel"]
    assert cancels == [(os_user(), {"job_id": job_id, "source": "coll"})]
    assert "ingest" not in [e["action"] for e in events]  # the run was interrupted
