"""The README's tour shows what the commands really print: its steps 1 to 3 are run on the
fixtures and every output line it shows must be printed.

Only run times and the repository's own path are allowed to differ.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TIMING = re.compile(r" in \d+(\.\d+)?s:")
FACE_ID = re.compile(r"^(\s+\d+\s+\d+\s+\S+\s+\S+\s+\S+\s+\S+)\s+\d+(\s)")
"""A row of the candidate table: its face_id depends on the order the workers finished in."""


def tour_blocks() -> list[tuple[str, list[str]]]:
    """(command, the output lines the README shows for it) of the tour's steps 1 to 3."""
    text = README.read_text()
    tour = text[text.index("## A five-minute tour"):text.index("**4.")]
    steps: list[tuple[str, list[str]]] = []
    fence: str | None = None  # the opening fence of the block we are in
    for line in tour.splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line
            continue
        if fence != "```":  # prose, or a bash block of commands without output
            continue
        if line.startswith("$ facetrail "):
            steps.append((line[2:], []))
        elif steps and not steps[-1][1] and steps[-1][0].endswith("\\"):
            steps[-1] = (steps[-1][0][:-1] + " " + line.strip(), [])
        elif line.strip():
            steps[-1][1].append(line)
    return steps


def normal(line: str) -> str:
    line = TIMING.sub(" in Ns:", line).rstrip()
    return FACE_ID.sub(r"\1 ID\2", line)


def shown_here(line: str) -> str:
    """A line of the README as this clone prints it: the README shows the repository at
    /work/main, and a clone may be anywhere (inside a path that ends in /work/main too)."""
    return normal(line.replace("/work/main/", f"{ROOT}/"))


@pytest.mark.slow
def test_the_tour_prints_what_the_readme_shows(tmp_path: Path) -> None:
    steps = tour_blocks()[:5]  # register and ingest the photos and the archive, search
    assert [c.split()[1] for c, _ in steps] == ["sources", "ingest", "sources", "ingest",
                                                "search"]
    home = tmp_path / "demo-home"
    for command, shown in steps:
        args = shlex.split(command)[1:]
        out = run_cli(home, *args, check=False)
        printed = {normal(line) for line in (out.stdout + out.stderr).splitlines()}
        missing = [line for line in shown if shown_here(line) not in printed]
        assert not missing, f"{command}\nREADME shows, not printed:\n" + "\n".join(
            missing) + "\n--- printed:\n" + out.stdout + out.stderr
