"""Fuzz web archive reading (``facetrail.sources.warc``): the bytes as a ``.warc``,
``.warc.gz`` or ``.wacz`` file; checking and listing it yields images and failures with a
reason, or raises facetrail's own errors, and nothing else."""

from __future__ import annotations

import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from facetrail.records import ImageRecord, SourceFailure
    from facetrail.sources.warc import WarcSource

SUFFIXES = (".warc", ".warc.gz", ".wacz")


def one_input(data: bytes) -> None:
    suffix = SUFFIXES[data[0] % 3] if data else ".warc"
    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / f"fuzz{suffix}"
        archive.write_bytes(data[1:])
        source = WarcSource()
        try:
            source.check(archive)
        finally:
            for item in source.items(archive, lambda p, f: False):
                assert isinstance(item, ImageRecord | SourceFailure), item
                if isinstance(item, SourceFailure):
                    assert item.reason and item.code, item


if __name__ == "__main__":
    from harness import run

    run(one_input)
