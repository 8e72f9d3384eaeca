"""``facetrail serve``: the web app in one process, or in several sharing one listening socket.

With ``workers`` > 1 this process binds the socket, then starts that many server processes
(spawned, not forked: each imports facetrail afresh, builds its own app and engine, and loads
the face models and the index once, for itself) which all accept connections on the inherited
socket; the kernel hands each new connection to one of them. This process only watches them:

- SIGTERM or SIGINT (Ctrl-C reaches only this process: the workers have a process group of
  their own) stops every worker in order, as a one-process server stops: requests in flight
  are answered, a running ingest job gives up its lease for another runner to claim;
- a worker that ends while the server runs (killed, crashed) is replaced, and its job, if it
  ran one, is claimed again by a runner (``facetrail.jobs``); a worker that could not start
  (an unreachable store, a bad setting) stops them all with its error;
- a worker whose parent is gone (this process was killed) stops by itself.

Several processes need a store that several processes write: PostgreSQL. A SQLite store is
served by one process, and asking for more is an error that says so.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from urllib.parse import urlsplit

from facetrail.errors import ConfigError, FacetrailError
from facetrail.settings import Settings
from facetrail.store import default_store_url

STARTUP_FAILED = 3
"""Exit status of a worker that could not start serving (uvicorn's own for this case)."""
STOP_TIMEOUT = 150.0
"""Seconds a worker has to stop (a job runner may take up to 120) before it is killed."""


def check_workers(settings: Settings, workers: int) -> None:
    """Refuse ``workers`` server processes that the store cannot serve."""
    if workers < 1:
        raise ConfigError(f"serve needs at least one worker, not {workers}")
    url = settings.store_url or default_store_url(settings.home)
    if workers > 1 and urlsplit(url).scheme == "sqlite":
        raise ConfigError(
            f"serve --workers {workers} needs a PostgreSQL store: a SQLite store is served by "
            "one process (set FACETRAIL_STORE_URL=postgresql://USER@HOST:PORT/DATABASE, "
            "docs/postgres.md, or serve with --workers 1)"
        )


def serve(settings: Settings, workers: int = 1, say: Callable[[str], None] = print) -> None:
    """Serve the web app on ``settings.host``:``settings.port`` with ``workers`` processes
    until SIGTERM or SIGINT. Raises ``ConfigError`` for several workers over a SQLite store,
    for an address it cannot listen on, and when a worker cannot start."""
    check_workers(settings, workers)
    if workers == 1:
        import uvicorn

        from facetrail.web import create_app

        uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                    log_level="info")
        return
    sock = _listen(settings.host, settings.port)
    try:
        host, port = sock.getsockname()[:2]
        say(f"facetrail serving on http://{_url_host(host)}:{port} with {workers} processes "
            f"(this one, {os.getpid()}, watches them)")
        Supervisor(settings, sock, workers, say).run()
    finally:
        sock.close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off only on sockets that
    # say they are TCP, and with it on a search waits 40 ms more for delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Supervisor:
    """Starts ``workers`` server processes on ``sock`` and keeps them running until told to
    stop (see the module docstring)."""

    def __init__(self, settings: Settings, sock: socket.socket, workers: int,
                 say: Callable[[str], None]) -> None:
        self.settings_json = settings.model_dump_json()
        self.sock = sock
        self.workers = workers
        self.say = say
        self.context = multiprocessing.get_context("spawn")
        self.stopping = threading.Event()

    def run(self) -> None:
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM,
                                                                     signal.SIGINT)}
        procs: list[BaseProcess] = []
        failed: int | None = None
        try:
            procs = [self._start() for _ in range(self.workers)]
            while not self.stopping.wait(0.5):
                for i, proc in enumerate(procs):
                    if proc.is_alive():
                        continue
                    proc.join()
                    if proc.exitcode == STARTUP_FAILED:
                        failed = proc.pid
                        self.stopping.set()
                        break
                    self.say(f"server process {proc.pid} ended ({_how(proc.exitcode)}); "
                             "starting another")
                    time.sleep(1.0)  # a worker that keeps dying does not spin
                    procs[i] = self._start()
        finally:
            _stop_all(procs)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if failed is not None:
            raise ConfigError(f"server process {failed} could not start (its error is above)")

    def _start(self) -> BaseProcess:
        proc = self.context.Process(target=_worker, name="facetrail-serve",
                                    args=(self.settings_json, self.sock, os.getpid()))
        proc.start()
        return proc

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping.set()


def _stop_all(procs: list[BaseProcess]) -> None:
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def _how(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"signal {-exitcode}"
    return f"exit status {exitcode}"


def _worker(settings_json: str, sock: socket.socket, parent: int) -> None:
    """One server process: the app on the inherited socket, until SIGTERM or its parent
    is gone."""
    if hasattr(os, "setpgrp"):
        os.setpgrp()  # a terminal's Ctrl-C goes to the parent, which stops the workers in order
    import uvicorn

    from facetrail.web import create_app

    try:
        app = create_app(Settings.model_validate_json(settings_json))
    except FacetrailError as exc:
        print(f"error [{exc.code}]: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILED)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info"))

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        server.should_exit = True

    threading.Thread(target=watch_parent, name="facetrail-parent", daemon=True).start()
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILED)
