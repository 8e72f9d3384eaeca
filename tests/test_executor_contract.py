"""One contract for every executor (``facetrail.executors.EXECUTORS``), with 1 and 2 workers:
results come back, a task's error is that task's, a killed worker is ``WorkerLost``, a
cancelling close does not wait; and ``Dispatch`` survives dead workers on each of them.

The tasks are ``executors.probe``'s: they echo, fail, sleep or kill their own worker (with
SIGKILL, as the kernel's OOM killer would), which works wherever an executor's workers run.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from facetrail.errors import ConfigError, WorkerLost
from facetrail.executors import EXECUTORS, Dispatch, Executor, Handle, make_executor
from facetrail.executors.inprocess import InProcessExecutor
from facetrail.executors.probe import Echo, Probe, ProbeWorker, probe


def installed(name: str) -> bool:
    """Whether the optional package an executor needs is installed."""
    return name != "ray" or importlib.util.find_spec("ray") is not None


PAIRS = [(name, workers) for name in EXECUTORS for workers in (1, 2)]


def _marks(name: str) -> list[pytest.MarkDecorator]:
    return [pytest.mark.skipif(not installed(name), reason=f"the {name} extra is not installed")]


CASES = [pytest.param(n, w, id=f"{n}-{w}", marks=_marks(n)) for n, w in PAIRS]
"""(name, workers) of every executor, for ``parametrize``."""
STARTS = [pytest.param((n, w), id=f"{n}-{w}", marks=_marks(n)) for n, w in PAIRS]
"""The same, for fixtures."""
PATIENCE = 120.0
"""Seconds any one wait may take before the test fails instead of hanging."""


@pytest.fixture(scope="module", autouse=True)
def _ray_up() -> Iterator[None]:
    """One Ray for the module: an executor kept open keeps the process's Ray running, so
    the tests' executors do not each start and stop one (docs/ray.md)."""
    if not installed("ray"):
        yield
        return
    held = make_executor("ray", ProbeWorker(), 1)
    yield
    held.close(cancel=True)


def start(name: str, workers: int) -> Executor[Probe, Echo]:
    return make_executor(name, ProbeWorker(), workers)


@pytest.fixture(params=STARTS)
def executor(request: pytest.FixtureRequest) -> Iterator[Executor[Probe, Echo]]:
    made = start(*request.param)
    yield made
    made.close(cancel=True)


@pytest.fixture(params=[*STARTS, pytest.param(None, id="in-process")])
def any_executor(request: pytest.FixtureRequest) -> Iterator[Executor[Probe, Echo]]:
    """Every executor, and the in-process one of a one-worker ingest (which has no worker to
    kill)."""
    made = InProcessExecutor(probe) if request.param is None else start(*request.param)
    yield made
    made.close(cancel=True)


def outcomes(executor: Executor[Probe, Echo], tasks: list[Probe]) -> list[Echo | Exception]:
    """Each task's result or error, in the order of ``tasks``, at most ``slots`` in flight."""
    got: dict[int, Echo | Exception] = {}
    in_flight: dict[Handle, int] = {}
    queue = list(enumerate(tasks))
    while queue or in_flight:
        while queue and len(in_flight) < executor.slots:
            i, task = queue.pop(0)
            in_flight[executor.submit(task)] = i
        done = executor.wait(in_flight, timeout=PATIENCE)
        assert done, "no task completed in time"
        for handle in done:
            i = in_flight.pop(handle)
            try:
                got[i] = executor.result(handle)
            except Exception as exc:
                got[i] = exc
    return [got[i] for i in range(len(tasks))]


def test_an_unknown_executor_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown executor 'hadoop'; use one of local"):
        make_executor("hadoop", ProbeWorker(), 2)


def test_every_task_comes_back_with_its_result(any_executor: Executor[Probe, Echo]) -> None:
    assert any_executor.slots >= 1
    tasks = [Probe(value=i, sleep=0.01 * (i % 3)) for i in range(3 * any_executor.slots + 1)]
    got = outcomes(any_executor, tasks)
    assert [e.value for e in got if isinstance(e, Echo)] == list(range(len(tasks)))


def test_an_error_in_a_task_is_that_tasks_error(any_executor: Executor[Probe, Echo]) -> None:
    got = outcomes(any_executor, [Probe(1), Probe(fail="bad bytes"), Probe(3)])
    assert isinstance(got[0], Echo) and isinstance(got[2], Echo)
    assert isinstance(got[1], ValueError) and not isinstance(got[1], WorkerLost)
    assert str(got[1]) == "bad bytes"
    # The worker that raised it is still there.
    (after,) = outcomes(any_executor, [Probe(4)])
    assert isinstance(after, Echo) and after.value == 4


def test_a_killed_worker_is_worker_lost(executor: Executor[Probe, Echo]) -> None:
    first = outcomes(executor, [Probe(1)])[0]
    handle = executor.submit(Probe(die=True))
    assert executor.wait([handle], timeout=PATIENCE) == {handle}
    with pytest.raises(WorkerLost):
        executor.result(handle)
    assert isinstance(first, Echo)


def test_a_cancelling_close_does_not_wait(any_executor: Executor[Probe, Echo]) -> None:
    if isinstance(any_executor, InProcessExecutor):
        for _ in range(3):  # queued here: nothing runs until waited for
            any_executor.submit(Probe(sleep=60))
    else:
        handles = [any_executor.submit(Probe(sleep=60)) for _ in range(any_executor.slots)]
        assert any_executor.wait(handles, timeout=1.0) == set()  # running, and not done
    started = time.monotonic()
    any_executor.close(cancel=True)
    assert time.monotonic() - started < 10


# -- Dispatch, the one crash handling, on every executor -----------------------------------
def dispatched(name: str, workers: int, tasks: list[Probe]) -> dict[int, Echo | Exception]:
    got: dict[int, Echo | Exception] = {}
    dispatch: Dispatch[int, Probe, Echo] = Dispatch(lambda: start(name, workers))
    with dispatch:
        for key, outcome in dispatch.run(enumerate(tasks)):
            assert key not in got, "one outcome per job"
            got[key] = outcome
    return got


@pytest.mark.parametrize(("name", "workers"), CASES)
def test_only_a_task_that_kills_its_worker_twice_is_lost(name: str, workers: int) -> None:
    tasks = [Probe(i, sleep=0.05) for i in range(8)]
    tasks[3] = Probe(3, die=True)
    tasks[5] = Probe(5, fail="bad bytes")
    got = dispatched(name, workers, tasks)
    assert sorted(got) == list(range(8))
    assert isinstance(got.pop(3), WorkerLost)
    assert str(got.pop(5)) == "bad bytes"
    assert all(isinstance(e, Echo) and e.value == i for i, e in got.items())


@pytest.mark.parametrize(("name", "workers"), CASES)
def test_a_task_that_killed_its_worker_once_comes_back(
    name: str, workers: int, tmp_path: Path
) -> None:
    tasks = [Probe(i, sleep=0.05) for i in range(6)]
    tasks[2] = Probe(2, die_once=str(tmp_path / "died"))
    got = dispatched(name, workers, tasks)
    assert (tmp_path / "died").exists()
    assert {i: e.value for i, e in got.items() if isinstance(e, Echo)} == {i: i for i in range(6)}


@pytest.mark.parametrize(("name", "workers"), CASES)
def test_follow_up_jobs_run_and_a_failing_stream_cancels(name: str, workers: int) -> None:
    dispatch: Dispatch[int, Probe, Echo] = Dispatch(lambda: start(name, workers))
    seen: list[int] = []
    with dispatch:
        for key, outcome in dispatch.run((i, Probe(i)) for i in range(3)):
            assert isinstance(outcome, Echo)
            seen.append(key)
            if key < 3:
                dispatch.add(key + 10, Probe(key + 10))
    assert sorted(seen) == [0, 1, 2, 10, 11, 12]

    def stream() -> Iterator[tuple[int, Probe]]:
        yield 0, Probe(0, sleep=60)
        raise KeyError("the source broke")

    broken: Dispatch[int, Probe, Echo] = Dispatch(lambda: start(name, workers))
    started = time.monotonic()
    with pytest.raises(KeyError, match="the source broke"), broken:
        for _ in broken.run(stream()):
            pass
    assert time.monotonic() - started < 10


def test_an_ingest_with_an_unknown_executor_is_refused(tmp_path: Path) -> None:
    import facetrail

    photos = tmp_path / "photos"
    photos.mkdir()
    with facetrail.open(tmp_path / "home", executor="hadoop") as ft:
        ft.add_source("s", "folder", photos, lawful_basis="tests", purpose="testing",
                      retention_days=1)
        with pytest.raises(ConfigError, match="unknown executor 'hadoop'"):
            ft.ingest("s")
