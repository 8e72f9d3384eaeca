"""A one-node Ray cluster on 127.0.0.1, for trying ``FACETRAIL_RAY_ADDRESS`` on one machine
and for the tests and benchmarks that join a cluster by address (docs/ray.md).

It is a real cluster head (``ray start --head``) in processes of its own, which a driver joins
as it would join a cluster of many machines. It is stopped by the process ids it started,
never with ``ray stop`` (which stops every Ray of the machine's user, by name).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from facetrail.errors import ConfigError
from facetrail.executors.ray_executor import LOOPBACK, RAY_ENVIRONMENT


class RayCluster:
    """``with RayCluster(cpus=2) as cluster:`` a head on ``cluster.address`` (HOST:PORT)."""

    def __init__(self, cpus: int | None = None, port: int | None = None,
                 ready_timeout: float = 120.0) -> None:
        self.cpus = cpus or os.cpu_count() or 1
        self.port = port or free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.ready_timeout = ready_timeout
        self.dir: Path | None = None
        self._head: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RayCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> str:
        """Start the head and wait until it takes drivers; returns its address."""
        # Short, so that Ray's socket paths under it stay within the 107 bytes allowed.
        self.dir = Path(tempfile.mkdtemp(prefix="ft-rayc-", dir="/tmp"))
        ray = Path(sys.executable).with_name("ray")
        command = [
            str(ray) if ray.exists() else "ray", "start", "--head", "--block",
            f"--node-ip-address={LOOPBACK}", f"--port={self.port}", f"--num-cpus={self.cpus}",
            "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.dir}",
        ]
        env = {**os.environ, **RAY_ENVIRONMENT, **self.driver_env()}
        with (self.dir / "head.log").open("wb") as log:
            self._head = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=log, start_new_session=True,
            )
        deadline = time.monotonic() + self.ready_timeout
        while not _accepts(LOOPBACK, self.port) or not self.raylets():
            if self._head.poll() is not None or time.monotonic() > deadline:
                said = (self.dir / "head.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise ConfigError(f"the Ray head did not start on {self.address}:\n{said}")
            time.sleep(0.2)
        return self.address

    @staticmethod
    def driver_env() -> dict[str, str]:
        """What a driver's environment needs to join: Ray's token authentication, with the
        token in Ray's default file (~/.ray/auth_token), made here when there is none. Ray
        reads these when it first connects: set them before."""
        token = Path.home() / ".ray" / "auth_token"
        if not token.exists():
            token.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return {"RAY_AUTH_MODE": "token"}

    def pids(self) -> list[int]:
        """Every process of the cluster: the ``ray start`` command and its descendants."""
        if self._head is None or self._head.poll() is not None:
            return []
        return [self._head.pid, *descendants(self._head.pid)]

    def raylets(self) -> list[int]:
        return [p for p in self.pids() if _name(p) == "raylet"]

    def stop(self, grace: float = 2.0) -> None:
        """Stop every process of the cluster, by id: the processes it started first (they
        exit on SIGTERM, or some do: whatever is left after ``grace`` seconds is killed), then,
        once it has reaped them, the head command."""
        head, self._head = self._head, None
        if head is not None:
            processes = descendants(head.pid)
            for pid in reversed(processes):
                _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(_alive(p) for p in processes):
                time.sleep(0.1)
            for pid in processes:
                _signal(pid, signal.SIGKILL)
            # The head polls its processes every second: it reaps them, where init may not.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(
                    Path(f"/proc/{p}").exists() for p in descendants(head.pid)):
                time.sleep(0.1)
            _signal(head.pid, signal.SIGTERM)
            try:
                head.wait(5)
            except subprocess.TimeoutExpired:
                head.kill()
                head.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, parents before their children (the children of every
    thread: Ray's servers start processes from threads other than their main one)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop(0)
        try:
            threads = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for thread in threads:
            try:
                children = (thread / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.append(child)
                    todo.append(child)
    return found


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False
