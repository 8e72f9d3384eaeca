"""Several server processes over one PostgreSQL store: `facetrail serve --workers N`, and
ingest jobs that run in exactly one server and survive the one running them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import PEOPLE, run_cli
from facetrail.web.server import _listen
from stores import new_database, raw_sql
from test_api_jobs import FINAL, add_source, wait_for
from webserver import Server, add_users


@pytest.fixture
def pg_home(tmp_path: Path) -> tuple[Path, str, dict[str, str]]:
    """A new home whose store is a new PostgreSQL database: (home, URL, tokens)."""
    home = tmp_path / "home"
    url = new_database()
    return home, url, add_users(home, url)


@pytest.fixture
def two_servers(pg_home: tuple[Path, str, dict[str, str]]) -> Iterator[list[Server]]:
    """Two servers on one home and one PostgreSQL store, as on two hosts (or as two of
    `serve --workers 2`'s processes)."""
    home, url, tokens = pg_home
    servers = [Server(home, tokens, env={"FACETRAIL_STORE_URL": url}) for _ in range(2)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def photos(tmp_path: Path, name: str, count: int) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for photo in sorted(PEOPLE.glob("*/*.jpg"))[:count]:
        shutil.copy(photo, folder / photo.name)
    return folder


def audit_actions(server: Server) -> list[str]:
    with server.client("auditor") as auditor:
        return [e["action"] for e in auditor.get("/api/audit").json()["events"]]


def children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def test_several_server_processes_need_postgresql(tmp_path: Path) -> None:
    refused = run_cli(tmp_path / "home", "serve", "--workers", "2", check=False)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1
    assert "serve --workers 2 needs a PostgreSQL store" in refused.stderr


def test_a_job_runs_in_one_server_and_every_server_finds_its_faces(
    two_servers: list[Server], tmp_path: Path
) -> None:
    first, second = two_servers
    folder = photos(tmp_path, "coll", 40)
    with first.client("admin") as admin:
        add_source(admin, "coll", folder)
        job_id = admin.post("/api/jobs", json={"source": "coll"}).json()["job"]["id"]
        job = wait_for(admin, job_id, lambda j: j["status"] in FINAL)
        assert job["status"] == "completed" and job["attempts"] == 1, job
        assert job["progress"]["images_new"] == 40
        listed = {s["name"]: s for s in admin.get("/api/sources").json()["sources"]}
        assert listed["coll"]["images"] == 40 and listed["coll"]["appearances"] == 40
    assert audit_actions(first).count("ingest") == 1
    # Whichever server ran it, both search the new faces (the other one catches up when it
    # sees the job finished).
    probe = sorted(folder.glob("*.jpg"))[0].read_bytes()
    for server in two_servers:
        deadline = time.monotonic() + 30
        while True:
            with server.client("analyst") as analyst:
                found = analyst.post("/api/searches/upload", files={"file": ("p.jpg", probe)},
                                     data={"case_ref": "W", "purpose": "workers"})
            assert found.status_code == 201, found.text
            candidates = found.json()["result"]["candidates"]
            if candidates and candidates[0]["score"] == 1.0:
                break
            assert time.monotonic() < deadline, f"{server.url} never found the job's faces"
            time.sleep(1)


def test_when_the_server_running_a_job_is_killed_the_other_finishes_it(
    two_servers: list[Server], pg_home: tuple[Path, str, dict[str, str]], tmp_path: Path
) -> None:
    url = pg_home[1]
    folder = photos(tmp_path, "big", 160)
    with two_servers[0].client("admin") as admin:
        add_source(admin, "big", folder)
        job_id = admin.post("/api/jobs", json={"source": "big"}).json()["job"]["id"]
        wait_for(admin, job_id, lambda j: j["progress"].get("images_new", 0) >= 3)
    holder = str(raw_sql(url, f"SELECT holder FROM jobs WHERE id={job_id}")[0][0])
    pids = [s.proc.pid if s.proc else 0 for s in two_servers]
    running = pids.index(int(holder.split(":")[1]))
    two_servers[running].stop(kill=True)
    other = two_servers[1 - running]
    with other.client("admin") as admin:
        job = wait_for(admin, job_id, lambda j: j["status"] in FINAL, timeout=300)
        assert job["status"] == "completed" and job["attempts"] == 2, job
        # The second run skipped what the first had stored.
        assert 0 < job["progress"]["images_new"] < 160
        listed = {s["name"]: s for s in admin.get("/api/sources").json()["sources"]}
        assert listed["big"]["images"] == 160 and listed["big"]["appearances"] == 160
    new_holder = str(raw_sql(url, f"SELECT holder FROM jobs WHERE id={job_id}")[0][0])
    assert int(new_holder.split(":")[1]) == pids[1 - running]
    assert audit_actions(other).count("ingest") == 1  # the killed run never finished


def test_a_server_stopped_during_a_job_leaves_no_ingest_worker_behind(
    pg_home: tuple[Path, str, dict[str, str]], tmp_path: Path
) -> None:
    home, url, tokens = pg_home
    server = Server(home, tokens, env={"FACETRAIL_STORE_URL": url}, ingest_workers=2).start()
    try:
        assert server.proc is not None
        with server.client("admin") as admin:
            add_source(admin, "big", photos(tmp_path, "big", 160))
            job_id = admin.post("/api/jobs", json={"source": "big"}).json()["job"]["id"]
            wait_for(admin, job_id, lambda j: j["progress"].get("images_new", 0) >= 3)
        pool = children(server.proc.pid)
        assert len(pool) >= 2, pool  # the ingest's worker processes
        server.stop()  # SIGTERM: the job is interrupted and the server ends
        deadline = time.monotonic() + 30
        while left := {p for p in pool if _alive(p)}:
            assert time.monotonic() < deadline, f"left behind: {left}"
            time.sleep(0.2)
    finally:
        server.stop()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_serve_workers_runs_processes_on_one_port_and_replaces_a_dead_one(
    pg_home: tuple[Path, str, dict[str, str]],
) -> None:
    home, url, tokens = pg_home
    server = Server(home, tokens, env={"FACETRAIL_STORE_URL": url},
                    serve_args=("--workers", "2")).start()
    try:
        assert server.proc is not None
        workers = {p for p in children(server.proc.pid) if _is_worker(p)}
        assert len(workers) == 2, workers  # it answered: both have started
        os.kill(min(workers), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            now = {p for p in children(server.proc.pid) if _is_worker(p)}
            if len(now) == 2 and min(workers) not in now:
                break
            assert time.monotonic() < deadline, now
            time.sleep(0.2)
        with server.client("admin") as admin:
            for _ in range(10):  # answered by whichever process accepts
                assert admin.get("/api/me").status_code == 200
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=120) == 0
        assert not any(Path(f"/proc/{p}").exists() for p in now)
        assert "starting another" in (server.log.read_text() if server.log else "")
    finally:
        server.stop()


def _is_worker(pid: int) -> bool:
    """A `serve --workers` process (not multiprocessing's resource tracker)."""
    try:
        return b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_the_shared_socket_says_it_is_tcp() -> None:
    """asyncio turns Nagle's algorithm off only on sockets created as IPPROTO_TCP; without it
    every search over `serve --workers` waited about 50 ms more (bench/server_throughput.py)."""
    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_failed_logins_are_counted_by_every_server_together(
    pg_home: tuple[Path, str, dict[str, str]],
) -> None:
    """Four wrong tokens, two at each of two servers on one store, reach a limit of four: the
    right token is then refused at either server. Counted per process, neither would be."""
    home, url, tokens = pg_home
    env = {"FACETRAIL_STORE_URL": url, "FACETRAIL_LOGIN_FAILURES": "4"}
    servers = [Server(home, tokens, env=env) for _ in range(2)]
    try:
        for server in servers:
            server.start()
        for server in servers * 2:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                wrong = client.get("/api/me", headers={"Authorization": "Bearer wrong"})
                assert wrong.status_code == 401
        for server in servers:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                right = client.get("/api/me",
                                   headers={"Authorization": f"Bearer {tokens['admin']}"})
                assert right.status_code == 429, right.text
                assert int(right.headers["Retry-After"]) >= 1
    finally:
        for server in servers:
            server.stop()


def test_wrong_tokens_sent_at_once_to_two_servers_are_told_wrong_no_more_than_the_limit(
    pg_home: tuple[Path, str, dict[str, str]],
) -> None:
    """20 wrong tokens at the same moment, half to each of two servers on one store, with a
    limit of 4: 4 are answered 401 (wrong) and 16 are answered 429, which tells nothing of the
    token. Checked first and counted after, each server could tell 4."""
    home, url, tokens = pg_home
    env = {"FACETRAIL_STORE_URL": url, "FACETRAIL_LOGIN_FAILURES": "4"}
    servers = [Server(home, tokens, env=env) for _ in range(2)]
    go = threading.Barrier(20)

    def guess(n: int) -> int:
        with httpx.Client(base_url=servers[n % 2].url, timeout=60) as client:
            go.wait(timeout=60)
            return client.get("/api/me", headers={
                "Authorization": f"Bearer ft_{n:02d}{'z' * 41}"}).status_code

    try:
        for server in servers:
            server.start()
        with ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(guess, range(20)))
        assert sorted(statuses) == [401] * 4 + [429] * 16, statuses
    finally:
        for server in servers:
            server.stop()

