"""Ingest on Ray (``FACETRAIL_EXECUTOR=ray``) keeps the local executor's guarantees: the same
images, faces and appearances; a killed actor costs nothing but time; a killed driver resumes
with no loss and no duplicates; bad items are recorded and never stop the run. Ray runs in the
ingesting process (a local Ray) and as a one-node cluster joined by address; either listens on
127.0.0.1 only. The executor contract itself runs in tests/test_executor_contract.py."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import facetrail
from conftest import PEOPLE, add_source, cli_json, run_cli
from facetrail.executors import Dispatch, make_executor
from facetrail.executors.probe import Echo, Probe, ProbeWorker
from facetrail.executors.ray_cluster import RayCluster, descendants
from facetrail.executors.ray_executor import RayExecutor
from facetrail.settings import Settings
from facetrail.store import open_store
from stores import own_store, store_url_of
from test_ingest import committed_images, snapshot

# Not importorskip: the executor imports Ray itself, once it has set the environment Ray
# reads when it is imported (which keeps it on 127.0.0.1).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="the ray extra is not installed")

RAY = {"FACETRAIL_EXECUTOR": "ray", "FACETRAIL_WORKERS": "2"}


# -- where Ray listens ----------------------------------------------------------------------
def listening(pids: list[int]) -> dict[int, list[str]]:
    """The local addresses each of ``pids`` listens on (TCP, IPv4 and IPv6), read from /proc."""
    addresses: dict[str, str] = {}  # socket inode -> address
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                addresses[fields[9]] = fields[1][:width]
    found: dict[int, list[str]] = {}
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            inode = target.removeprefix("socket:[").removesuffix("]")
            if target.startswith("socket:[") and inode in addresses:
                found.setdefault(pid, []).append(addresses[inode])
    return found


def loopback(hex_address: str) -> bool:
    """127.0.0.0/8, ::1, or ::ffff:127.x.x.x, as /proc/net/tcp* spells them."""
    if len(hex_address) == 8:  # IPv4, little-endian
        return hex_address.endswith("7F")
    return hex_address in ("00000000000000000000000001000000",) or (
        hex_address[:24] == "0000000000000000FFFF0000" and hex_address.endswith("7F"))


def assert_loopback_only(pids: list[int]) -> None:
    found = listening(pids)
    assert len(found) >= 3, f"too few Ray processes listen: {found}"  # gcs, raylet, workers
    elsewhere = {pid: a for pid, a in found.items() if not all(map(loopback, a))}
    assert not elsewhere, f"listening off loopback: {elsewhere}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    """A one-node cluster on 127.0.0.1 (``ray start --head``), stopped by its process ids."""
    with RayCluster(cpus=2) as started, pytest.MonkeyPatch.context() as env:
        for key, value in started.driver_env().items():
            env.setenv(key, value)
        yield started
    assert not started.pids()


def test_a_local_ray_listens_on_loopback_only_and_stops_with_its_executor() -> None:
    before = set(descendants(os.getpid()))  # earlier tests' helpers (a resource tracker)
    executor = make_executor("ray", ProbeWorker(), 2, settings=Settings())
    try:
        assert isinstance(executor, RayExecutor)
        actors = executor.pids()
        ray_processes = [p for p in descendants(os.getpid()) if p not in before
                         and b"resource_tracker" not in _cmdline(p)]
        assert set(actors) <= set(ray_processes)
        assert_loopback_only([os.getpid(), *ray_processes])
        assert [p for p in ray_processes  # what stops Ray if this process is killed
                if b"facetrail.executors.ray_watch" in Path(f"/proc/{p}/cmdline").read_bytes()]
    finally:
        executor.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_running(p) for p in ray_processes):
        time.sleep(0.1)
    assert not [p for p in ray_processes if _running(p)], "Ray outlived its executor"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie not yet reaped by this process does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


FAILED_START = """
import gc, os, warnings
warnings.simplefilter("always", ResourceWarning)
from facetrail.errors import ConfigError
from facetrail.executors.ray_cluster import descendants
from facetrail.executors.ray_executor import _Runtime
try:
    _Runtime().acquire(None)
except ConfigError as exc:
    print("refused:", exc)
gc.collect()
print("left:", descendants(os.getpid()))
"""


def test_a_local_ray_that_fails_to_start_leaves_nothing_running_or_unreaped() -> None:
    """Its GCS server given no time to start, both tries fail: the error says so, and every
    process they started is ended and reaped (an unreaped one warns when it is collected)."""
    env = {**os.environ, "RAY_gcs_server_port_wait_time_s": "0"}
    done = subprocess.run([sys.executable, "-c", FAILED_START], env=env, text=True,
                          capture_output=True, timeout=300)
    assert "refused: could not start or join Ray (local)" in done.stdout, done
    assert "left: []" in done.stdout, done.stdout
    assert "still running" not in done.stderr, done.stderr


def test_a_cluster_is_joined_by_address_on_loopback(cluster: RayCluster) -> None:
    settings = Settings(ray_address=cluster.address)
    tasks = [Probe(i, sleep=0.05) for i in range(6)]
    tasks[2] = Probe(2, die=True)
    got: dict[int, Echo | Exception] = {}
    with Dispatch(lambda: make_executor("ray", ProbeWorker(), 2, settings=settings)) as run:
        for key, outcome in run.run(enumerate(tasks)):
            got[key] = outcome
            if key == 0:
                assert_loopback_only([os.getpid(), *cluster.pids()])
    assert type(got.pop(2)).__name__ == "WorkerLost"
    assert {i: e.value for i, e in got.items() if isinstance(e, Echo)} == {
        i: i for i in (0, 1, 3, 4, 5)}
    assert cluster.raylets(), "leaving the cluster stopped it"


# -- ingest ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 people, a copy of one photo, and items that are not photos."""
    photos = tmp_path_factory.mktemp("ray") / "photos"
    for person in sorted(PEOPLE.iterdir())[:16]:
        shutil.copytree(person, photos / person.name)
    shutil.copy(PEOPLE / "Ashanti" / "Ashanti_0001.jpg", photos / "dup-of-ashanti.jpg")
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "text.jpg").write_text("hello, I am not a photo\n")
    return photos


@pytest.fixture(scope="module")
def local_run(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, int],
                                                                              object]:
    """The report and snapshot of the local executor's ingest of ``photos``."""
    home = tmp_path_factory.mktemp("ray-local") / "home"
    add_source(home, "s", photos)
    report = cli_json(home, "ingest", "s")
    assert isinstance(report, dict)
    return report, snapshot(home)


COUNTED = ("items", "images_new", "duplicates", "faces", "errors")


def test_ingest_on_ray_equals_the_local_executor_with_progress_and_report(
        photos: Path, local_run: tuple[dict[str, int], object], tmp_path: Path) -> None:
    home = tmp_path / "home"
    add_source(home, "s", photos)
    progress: list[tuple[int, int | None]] = []
    with facetrail.open(home, executor="ray", workers=2) as engine:
        report = engine.ingest("s", progress=lambda c, total: progress.append((c.items, total)))
        again = engine.ingest("s")
    expected_report, expected = local_run
    assert {k: getattr(report, k) for k in COUNTED} == {k: expected_report[k] for k in COUNTED}
    assert expected_report["errors"] == 2 and expected_report["duplicates"] == 1
    assert snapshot(home) == expected
    counted = [items for items, _ in progress]
    assert counted == sorted(counted) and counted[-1] == report.items
    assert (again.images_new, again.duplicates) == (0, 0)
    assert snapshot(home) == expected


def test_ingest_on_a_cluster_equals_the_local_executor(
        photos: Path, local_run: tuple[dict[str, int], object], cluster: RayCluster,
        tmp_path: Path) -> None:
    env = {**RAY, "FACETRAIL_RAY_ADDRESS": cluster.address}
    home = tmp_path / "home"
    add_source(home, "s", photos)
    report = json.loads(run_cli(home, "ingest", "s", "--json", env_extra=env).stdout)
    assert {k: report[k] for k in COUNTED} == {k: local_run[0][k] for k in COUNTED}
    assert snapshot(home) == local_run[1]
    assert cluster.raylets(), "the run stopped the cluster it joined"


def _ingest(home: Path, env_extra: dict[str, str], **popen: object) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    env.update(own_store(home))
    env.update(env_extra)
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "facetrail", "--home", str(home), "ingest", "s", "--json"],
        env=env, text=True, **popen)


def actors_of(driver: int) -> list[int]:
    return [p for p in descendants(driver)
            if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"ray::FacetrailWorker")]


def kill_an_actor_mid_run(proc: subprocess.Popen[str], store_url: str) -> bool:
    """SIGKILL one of the ingest ``proc``'s Ray actors once 3 images are committed; whether
    one could be killed before the ingest ended."""
    store = open_store(store_url)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            actors = actors_of(proc.pid) if committed_images(store) >= 3 else []
            if actors:
                os.kill(actors[0], signal.SIGKILL)
                return True
            time.sleep(0.05)
        return False
    finally:
        store.close()


def test_an_actor_killed_mid_ingest_costs_nothing(
        photos: Path, local_run: tuple[dict[str, int], object], tmp_path: Path) -> None:
    home = tmp_path / "home"
    add_source(home, "s", photos)
    proc = _ingest(home, RAY, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = kill_an_actor_mid_run(proc, store_url_of(home))
    out, err = proc.communicate(timeout=300)
    assert killed, "no actor could be killed"
    assert proc.returncode == 0, err
    assert json.loads(out)["errors"] == 2, (out, err)
    assert snapshot(home) == local_run[1]


def test_a_driver_killed_mid_ingest_resumes_with_no_loss_and_no_duplicates(
        photos: Path, local_run: tuple[dict[str, int], object], tmp_path: Path) -> None:
    home = tmp_path / "home"
    add_source(home, "s", photos)
    proc = _ingest(home, RAY, start_new_session=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    store = open_store(store_url_of(home))
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if committed_images(store) >= 3:
                break
            time.sleep(0.02)
        time.sleep(0.3)  # past the watcher's first looks; later helpers are orphans it finds
        assert proc.poll() is None, "the ingest finished before it could be killed"
        started = [proc.pid, *descendants(proc.pid)]
        assert len(started) > 4
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone: Ray's processes must follow it
        proc.wait()
        assert 3 <= snapshot(home).images < local_run[1].images  # type: ignore[attr-defined]
        left = _survivors(started, group=proc.pid)
        for pid in left:  # by pid, and only those this test started
            os.kill(pid, signal.SIGKILL)
        assert not left, "Ray processes outlived the driver that started them"
        deadline = time.monotonic() + 10
        while [d for d in Path("/tmp").glob("ft-ray-*")
               if list(d.glob(f"session_2*_{proc.pid}"))] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [d for d in Path("/tmp").glob("ft-ray-*")
                    if list(d.glob(f"session_2*_{proc.pid}"))], "Ray's files were left"

        report = cli_json(home, "ingest", "s")
        assert isinstance(report, dict) and report["images_new"] > 0
        assert snapshot(home) == local_run[1]
        assert [r.status for r in store.runs()] == ["interrupted", "completed"]
    finally:
        store.close()


def _survivors(pids: list[int], group: int, wait: float = 30.0) -> list[int]:
    """Those of ``pids`` still running in process group ``group`` (the killed driver's) after
    up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        alive = []
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == group:
                alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)
