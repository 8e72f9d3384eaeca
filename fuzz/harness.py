"""What every harness shares: run under atheris, or replay files as regression tests.

A harness module defines ``one_input(data: bytes) -> None``, which must raise nothing but
facetrail's own errors (``FacetrailError``): anything else escaping it is a crash.
``run(one_input)`` fuzzes it with atheris (``python fuzz/<harness>.py [libFuzzer options]``,
e.g. ``-max_total_time=60 fuzz/corpus/<name>``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

from facetrail.errors import FacetrailError


def guarded(one_input: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``one_input`` with facetrail's own errors taken as expected outcomes."""

    def test_one(data: bytes) -> None:
        with contextlib.suppress(FacetrailError):
            one_input(data)

    return test_one


def run(one_input: Callable[[bytes], None]) -> None:
    import atheris

    atheris.Setup(sys.argv, guarded(one_input))
    atheris.Fuzz()
