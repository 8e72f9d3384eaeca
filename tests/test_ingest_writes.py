"""Workers that write to PostgreSQL themselves (FACETRAIL_INGEST_WRITES=workers): the same
images, faces and appearances as the driver's writes, on the local executor and on Ray; a
worker killed mid-run costs nothing; a SQLite store is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import add_source, cli_json, run_cli
from stores import new_database
from test_ingest import Snapshot, snapshot
from test_ray import RAY, kill_an_actor_mid_run, photos  # noqa: F401  # photos: a module fixture

WORKERS = {"FACETRAIL_INGEST_WRITES": "workers", "FACETRAIL_WORKERS": "2"}


def pg_home(root: Path, source: Path) -> tuple[Path, dict[str, str]]:
    """A home on a new PostgreSQL database with the source 's', and its environment."""
    home = root / "home"
    env = {"FACETRAIL_STORE_URL": new_database()}
    run_cli(home, "sources", "add", "s", "--kind", "folder", "--uri", str(source),
            "--lawful-basis", "test fixtures, public data sets", "--purpose", "testing",
            "--retention-days", "30", env_extra=env)
    return home, env


def ingest(home: Path, env: dict[str, str]) -> dict[str, int]:
    report = json.loads(run_cli(home, "ingest", "s", "--json", env_extra=env).stdout)
    assert isinstance(report, dict)
    return report


def snap(home: Path, env: dict[str, str]) -> Snapshot:
    return snapshot(home, env["FACETRAIL_STORE_URL"])


@pytest.fixture(scope="module")
def driver_run(photos: Path, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
               ) -> tuple[dict[str, int], Snapshot]:
    home, env = pg_home(tmp_path_factory.mktemp("driver"), photos)
    return ingest(home, {**env, "FACETRAIL_WORKERS": "2"}), snap(home, env)


COUNTED = ("items", "images_new", "duplicates", "faces", "errors", "suppressed")


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_workers_write_what_the_driver_would(
        executor: str, photos: Path, driver_run: tuple[dict[str, int], Snapshot],  # noqa: F811
        tmp_path: Path) -> None:
    home, env = pg_home(tmp_path, photos)
    env = {**env, **WORKERS, **(RAY if executor == "ray" else {})}
    report = ingest(home, env)
    expected_report, expected = driver_run
    assert {k: report[k] for k in COUNTED} == {k: expected_report[k] for k in COUNTED}
    assert expected_report["duplicates"] == 1 and expected_report["errors"] == 2
    assert snap(home, env) == expected
    again = ingest(home, env)
    assert (again["images_new"], again["duplicates"]) == (0, 0)
    assert snap(home, env) == expected


def test_a_worker_killed_after_writing_costs_nothing(
        photos: Path, driver_run: tuple[dict[str, int], Snapshot], tmp_path: Path  # noqa: F811
) -> None:
    home, env = pg_home(tmp_path, photos)
    full = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    full.update({**env, **WORKERS, **RAY})
    proc = subprocess.Popen([sys.executable, "-m", "facetrail", "--home", str(home), "ingest",
                             "s", "--json"], env=full, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    killed = kill_an_actor_mid_run(proc, env["FACETRAIL_STORE_URL"])
    out, err = proc.communicate(timeout=300)
    assert killed, "no actor could be killed"
    assert proc.returncode == 0, err
    assert json.loads(out)["errors"] == 2, (out, err)
    assert snap(home, env) == driver_run[1]


def test_a_sqlite_store_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    add_source(home, "s", tmp_path)
    out = run_cli(home, "ingest", "s", "--json", check=False,
                  env_extra={"FACETRAIL_INGEST_WRITES": "workers"})
    assert out.returncode == 2
    assert "needs a PostgreSQL store" in json.loads(out.stdout)["error"]["message"]
    assert cli_json(home, "stats")  # nothing was started, nothing broken
