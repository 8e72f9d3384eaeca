"""Shared fixtures: real fixture photos, a real SQLite store, a real FAISS index, the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import facetrail
from facetrail.engine import Facetrail
from facetrail.store import EraseSelector, Store
from stores import copy_home, new_database, own_store, postgres_mode, store_env
from webserver import Server, serve_copy

DATA = Path(__file__).parent / "data"
FACES = DATA / "faces"
PEOPLE = FACES / "people"
WARCS = DATA / "warc"
GROUP_IDENTITIES = {
    "two_people.jpg": {"Barack_Obama", "Joseph_Biden"},
    "kit_with_rose.jpg": {"Kit_Harington", "Rose_Leslie"},
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FACETRAIL_"):
            monkeypatch.delenv(key)
    if postgres_mode():  # every test gets a store of its own (tests/stores.py)
        monkeypatch.setenv("FACETRAIL_STORE_URL", new_database())


def run_cli(
    home: Path, *args: str, check: bool = True, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``facetrail`` command as a user would (``env_extra``: settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    env.update(store_env(home))
    env.update(env_extra or {})
    proc = subprocess.run(
        [sys.executable, "-m", "facetrail", "--home", str(home), *args],
        capture_output=True, text=True, env=env, timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"facetrail {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def kill_a_worker(proc: subprocess.Popen[str], ready: Callable[[], bool],
                  timeout: float = 300) -> bool:
    """Once ``ready()``, SIGKILL one worker process of ``proc`` (as the kernel's OOM killer
    would). False if ``proc`` ended, or the time ran out, first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        workers = worker_pids(proc.pid) if ready() else []
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            return True
        time.sleep(0.05)
    return False


def worker_pids(parent: int) -> list[int]:
    """The pool workers among ``parent``'s children (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]


def erase_faces(store: Store, face_ids: list[int]) -> None:
    """Erase faces from ``store`` (either kind) as an erasure does, but behind the index's
    back: only the store changes."""
    scope = store.erasure_scope(EraseSelector(face_ids=tuple(face_ids)))
    store.erase(scope, kind="face", target=",".join(map(str, face_ids)), reason="test",
                actor="test")


def cli_json(home: Path, *args: str) -> object:
    return json.loads(run_cli(home, *args, "--json").stdout)


def add_source(home: Path, name: str, uri: Path, kind: str = "folder") -> None:
    run_cli(home, "sources", "add", name, "--kind", kind, "--uri", str(uri),
            "--lawful-basis", "test fixtures, public data sets", "--purpose", "testing",
            "--retention-days", "30")


def identity_of(location: str) -> set[str]:
    path = Path(location)
    if path.parent.parent.name == "people":
        return {path.parent.name}
    return GROUP_IDENTITIES.get(path.name, set())


@pytest.fixture(scope="session")
def gallery_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """people/, group/, noface/ and edge_cases/ ingested through the CLI (not unknown/),
    into one source rooted at their folder (an ingest reads only inside its source)."""
    home = tmp_path_factory.mktemp("gallery")
    own_store(home)
    add_source(home, "people", FACES)
    for part in ("people", "group", "noface", "edge_cases"):
        run_cli(home, "ingest", str(FACES / part), "--source", "people")
    return home


@pytest.fixture
def gallery(gallery_home: Path, tmp_path: Path) -> Iterator[Facetrail]:
    """A private copy of the session gallery, opened through the public API."""
    home = tmp_path / "home"
    copy_home(gallery_home, home)
    with facetrail.open(home, workers=1) as engine:
        yield engine


@pytest.fixture(scope="session")
def api_server(gallery_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``facetrail serve`` over a copy of the gallery, with the accounts of
    ``webserver.ROLE_USERS``. Shared by the session: tests add their own users and cases."""
    yield from serve_copy(gallery_home, tmp_path_factory.mktemp("api"))
