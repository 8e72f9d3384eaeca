"""The Ray executor (``FACETRAIL_EXECUTOR=ray``): workers are Ray actors, on this machine or
on every machine of a Ray cluster (docs/ray.md).

Each actor runs the worker recipe's ``start`` once (it holds the loaded face model) and then
runs tasks one at a time, with BLAS and OpenMP pinned to one thread: an actor is one core's
worth of work. Actors ask Ray for half a CPU each (``CPU_SHARE``) and are spread over the
nodes: whole CPUs each would fill a cluster with one executor's actors, and the next actor
asked for (another executor's, even a replacement's) would wait forever.

Where Ray runs (``FACETRAIL_RAY_ADDRESS``):

- unset: a Ray of this process's own, on this machine, started with the first Ray executor
  and stopped when the last one closes. Every one of its servers listens on 127.0.0.1 only
  (Ray's default is the machine's network address), it records no usage statistics, and its
  files live in a temporary directory removed with it.
- ``HOST:PORT``: the head of a running cluster, joined as a driver and left when the last
  executor closes; the cluster itself is never stopped. A head on a loopback address is joined
  from 127.0.0.1 as well.

A killed actor is ``WorkerLost`` (``dispatch.Dispatch`` then retries its tasks on the actors of
a new executor). Ray starts once per process, not once per executor: executors made one after
the other (as ``Dispatch`` does after a lost worker) share the Ray they find running.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from facetrail.errors import ConfigError, MissingExtraError, WorkerLost
from facetrail.executors.base import Handle, Worker

T = TypeVar("T")
R = TypeVar("R")

LOOPBACK = "127.0.0.1"
ONE_THREAD = {name: "1" for name in (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
)}
"""The environment of every actor: one thread for each numeric library."""
CPU_SHARE = 0.5
"""Of a CPU per actor, when there are as many actors as CPUs (and of its share of the CPUs
when there are more actors): all the actors of two executors fit at once, so an executor that
starts while another is still open (one being given up after a lost worker, another ingest
on the same cluster) never waits for resources that nothing will free."""
RAY_ENVIRONMENT = {
    # Ray reads these when it is imported; they keep a Ray started here on 127.0.0.1, and
    # quiet. Without the first, Ray listens on the machine's network address even when told
    # 127.0.0.1 (it takes that to mean "this machine").
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # How long ray.init waits for its GCS server to write its port: Ray's 30 s default ran
    # out on a loaded 2-core machine.
    "RAY_gcs_server_port_wait_time_s": "120",
}


START_ATTEMPTS = 2
"""Tries at starting a local Ray."""


class FacetrailWorker:
    """A Ray actor: what one worker recipe started, running the tasks sent to it."""

    def __init__(self, worker: Worker[Any, Any]) -> None:
        self._run = worker.start()

    def ready(self) -> int:
        """The actor's process id, once its recipe has started."""
        return os.getpid()

    def run(self, task: Any) -> Any:
        return self._run(task)


REAP_SECONDS = 30.0
"""How long a stopping local Ray's killed processes are waited for."""


def import_ray(address: str | None) -> Any:
    """The ``ray`` module, ready to start or join Ray on loopback when ``address`` is unset or
    a loopback address."""
    if loopback(address):
        # Ray is configured through its environment (and its child processes inherit it):
        # set only what is not set already, once, right before Ray is imported.
        for key, value in RAY_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
    try:
        import ray
        from ray._private import ray_constants
    except ImportError as exc:
        raise MissingExtraError(exc.name or "ray", "ray") from exc
    if loopback(address) and ray_constants.ENABLE_RAY_CLUSTER:
        raise ConfigError(
            "ray was imported before facetrail could keep it on 127.0.0.1; set "
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in the environment"
        )
    return ray


def loopback(address: str | None) -> bool:
    if address is None:
        return True
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass
class _Runtime:
    """The Ray this process is connected to, and how many executors use it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
    address: str | None = None
    started: bool = False
    """Whether it was this module that connected (and so disconnects, and stops a Ray it
    started); a Ray some other code of this process started is left as it is."""
    temp_dir: str | None = None
    watcher: subprocess.Popen[bytes] | None = None
    """Of a local Ray: ``ray_watch``, which stops what is left of it if this process is
    killed."""

    def acquire(self, address: str | None) -> Any:
        ray = import_ray(address)
        with self.lock:
            if self.users and address != self.address:
                raise ConfigError(
                    f"this process uses Ray at {self.address or 'a local Ray'} already; it "
                    f"cannot join {address or 'a local Ray'} at the same time"
                )
            if not self.users and not ray.is_initialized():
                self._connect(ray, address)
            self.users += 1
            self.address = address
        return ray

    def release(self, ray: Any) -> None:
        with self.lock:
            self.users -= 1
            if self.users or not self.started:
                return
            self.started = False
            _shutdown(ray, self.temp_dir)  # stops a local Ray; only leaves a cluster
            if self.watcher is not None:
                self.watcher.kill()
                self.watcher.wait()
                self.watcher = None
            if self.temp_dir is not None:
                shutil.rmtree(self.temp_dir, ignore_errors=True)
                self.temp_dir = None

    def _connect(self, ray: Any, address: str | None) -> None:
        options: dict[str, Any] = {
            "include_dashboard": False, "log_to_driver": False, "configure_logging": False,
            "namespace": "facetrail",
        }
        if loopback(address):
            options["_node_ip_address"] = LOOPBACK
        if address is not None:
            options["address"] = address
        # A local Ray that a busy machine starts too slowly (its processes' ports not written
        # in time) is stopped and started once more.
        for attempt in range(1 if address is not None else START_ATTEMPTS):
            if address is None:
                # Short, so that Ray's socket paths under it stay within the 107 bytes allowed.
                self.temp_dir = tempfile.mkdtemp(prefix="ft-ray-", dir="/tmp")
                options.update(num_cpus=os.cpu_count() or 1, _temp_dir=self.temp_dir)
            try:
                ray.init(**options)
                break
            except Exception as exc:
                with contextlib.suppress(Exception):
                    _shutdown(ray, self.temp_dir)  # and what a failed start left running
                if self.temp_dir is not None:
                    _stop_left(self.temp_dir)  # its processes' own children
                    shutil.rmtree(self.temp_dir, ignore_errors=True)
                    self.temp_dir = None
                if address is not None or attempt + 1 == START_ATTEMPTS:
                    raise ConfigError(
                        f"could not start or join Ray ({address or 'local'}): {exc}") from exc
                time.sleep(1.0)
        self.started = True
        if address is None:
            self.watcher = subprocess.Popen(
                [sys.executable, "-m", "facetrail.executors.ray_watch", str(os.getpid()),
                 *([self.temp_dir] if self.temp_dir else [])],
                stdin=subprocess.DEVNULL, start_new_session=True,
            )


def _shutdown(ray: Any, temp_dir: str | None = None) -> None:
    """``ray.shutdown()``, then wait until the processes of a local Ray have ended. Ray kills
    what does not stop within a second and waits a second more; on a loaded machine a killed
    process may take longer to end, and its Popen, dropped unreaped, warns when collected.
    The processes are the node's, and, given the Ray's ``temp_dir``, every process this one
    started with it in its arguments (a start that failed leaves no node that knows them)."""
    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    started = [info.process for infos in dict(getattr(node, "all_processes", None) or {}).values()
               for info in infos]
    ray.shutdown()
    if temp_dir is not None:
        started += [p for p in gc.get_objects() if isinstance(p, subprocess.Popen)
                    and p.returncode is None and temp_dir in str(p.args)]
    for process in started:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if process.poll() is None:
                process.kill()
            process.wait(timeout=REAP_SECONDS)


def _stop_left(temp_dir: str) -> None:
    """Kill this process's descendants that belong to the Ray under ``temp_dir``."""
    from facetrail.executors.ray_cluster import descendants  # it imports this module

    for pid in descendants(os.getpid()):
        with contextlib.suppress(OSError):
            if temp_dir.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


# Ray's connection is the process's own (``ray.init`` holds it globally), so the count of the
# executors that use it is kept per process too.
_runtime = _Runtime()


@dataclass
class _Call:
    ref: Any
    actor: int


class RayExecutor(Generic[T, R]):
    """``workers`` Ray actors (0: one per CPU of the Ray cluster), each running
    ``worker.start()`` once; two tasks in flight per actor, so that none waits for its next."""

    def __init__(self, worker: Worker[T, R], workers: int = 0,
                 address: str | None = None) -> None:
        ray = self._ray = _runtime.acquire(address)
        try:
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            count = workers or max(1, int(cpus))
            share = round(min(1.0, cpus / count) * CPU_SHARE, 4)
            actor = ray.remote(FacetrailWorker).options(
                num_cpus=share, max_restarts=0, max_task_retries=0,
                scheduling_strategy="SPREAD", runtime_env={"env_vars": ONE_THREAD},
            )
            self._actors = [actor.remote(worker) for _ in range(count)]
        except BaseException:
            _runtime.release(ray)
            raise
        self.slots = 2 * count
        self._calls: dict[Handle, _Call] = {}
        self._numbers = itertools.count()
        self._lost = False
        self._closed = False

    def pids(self, timeout: float = 120.0) -> list[int]:
        """The actors' process ids, once each has started its recipe."""
        return list(self._ray.get([a.ready.remote() for a in self._actors], timeout=timeout))

    def submit(self, task: T) -> Handle:
        if self._lost:
            raise WorkerLost(_LOST)
        busy = [0] * len(self._actors)
        for call in self._calls.values():
            busy[call.actor] += 1
        chosen = busy.index(min(busy))
        handle = Handle(next(self._numbers))
        self._calls[handle] = _Call(self._actors[chosen].run.remote(task), chosen)
        return handle

    def wait(self, handles: Collection[Handle], timeout: float | None = None) -> set[Handle]:
        refs = {self._calls[h].ref: h for h in handles}
        if not refs:
            return set()
        ready, _ = self._ray.wait(list(refs), num_returns=1, timeout=timeout, fetch_local=False)
        if ready:  # and any others done by now
            ready, _ = self._ray.wait(list(refs), num_returns=len(refs), timeout=0,
                                      fetch_local=False)
        return {refs[r] for r in ready}

    def result(self, handle: Handle) -> R:
        from ray import exceptions

        call = self._calls.pop(handle)
        try:
            return self._ray.get(call.ref)
        except exceptions.RayTaskError as exc:
            # The task's own exception, raised again as itself (not Ray's wrapper of it).
            cause = exc.cause
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except (exceptions.RayActorError, exceptions.WorkerCrashedError,
                exceptions.ObjectLostError) as exc:
            self._lost = True
            raise WorkerLost(_LOST) from exc

    def close(self, cancel: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if not cancel and self._calls:
                self._ray.wait([c.ref for c in self._calls.values()],
                               num_returns=len(self._calls), fetch_local=False)
            for actor in self._actors:
                self._ray.kill(actor, no_restart=True)
        finally:
            self._calls.clear()
            self._actors = []
            _runtime.release(self._ray)


_LOST = "a Ray actor died (killed, out of memory, a crash in native code, or its node was lost)"

