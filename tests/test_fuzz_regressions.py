"""Inputs the fuzzing harnesses (``fuzz/``) found crashing, replayed: each must now end in
facetrail's own error, or pass. ``tests/data/fuzz/<harness>-<what>`` is fed to
``fuzz/fuzz_<harness>.py``'s ``one_input``; ``test_harnesses_run_briefly`` runs every harness
under atheris for a few seconds (``FUZZ_SECONDS``), as CI does."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
CRASHES = sorted((Path(__file__).parent / "data" / "fuzz").iterdir())
HARNESSES = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ.glob("fuzz_*.py"))

atheris = pytest.importorskip("atheris")


def harness(name: str):  # noqa: ANN201 (a module)
    sys.path.insert(0, str(FUZZ))
    try:
        return importlib.import_module(f"fuzz_{name}"), importlib.import_module("harness")
    finally:
        sys.path.remove(str(FUZZ))


@pytest.mark.parametrize("crash", CRASHES, ids=[c.name for c in CRASHES])
def test_crash_inputs_end_in_facetrail_errors(crash: Path) -> None:
    module, shared = harness(crash.name.split("-")[0])
    shared.guarded(module.one_input)(crash.read_bytes())


@pytest.mark.parametrize("name", HARNESSES)
def test_harnesses_run_briefly(name: str, tmp_path: Path) -> None:
    seconds = os.environ.get("FUZZ_SECONDS", "6")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), str(FUZZ), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(FUZZ / f"fuzz_{name}.py"), f"-max_total_time={seconds}",
         "-rss_limit_mb=2048", "-timeout=20", f"-artifact_prefix={tmp_path}/",
         str(tmp_path), str(FUZZ / "corpus" / name)],
        capture_output=True, text=True, env=env, timeout=int(seconds) + 120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
