"""Fuzz manifest parsing (``facetrail.sources.manifest``): the bytes as a CSV or JSONL
manifest; checking and listing it yields file references inside the manifest's folder and
failures with a reason, or raises facetrail's own errors, and nothing else; the URLs it
yields are http(s) URLs (``sources/fields.py``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from facetrail.records import ImageRef, SourceFailure
    from facetrail.sources.confine import inside
    from facetrail.sources.fields import web_url
    from facetrail.sources.manifest import ManifestSource


def one_input(data: bytes) -> None:
    suffix = ".jsonl" if data and data[0] % 2 else ".csv"
    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder) / f"fuzz{suffix}"
        manifest.write_bytes(data[1:])
        source = ManifestSource()
        try:
            source.check(manifest)
        finally:
            for item in source.items(manifest, lambda p, f: False):
                assert isinstance(item, ImageRef | SourceFailure), item
                if isinstance(item, ImageRef):
                    assert inside(item.at.path, folder), item
                    seen = item.provenance  # only checked fields are stored
                    assert all(web_url(u) for u in seen.page_urls), seen
                    assert seen.source_url is None or web_url(seen.source_url), seen
                else:
                    assert item.reason and item.code, item


if __name__ == "__main__":
    from harness import run

    run(one_input)
