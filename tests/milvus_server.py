"""The Milvus server the index tests run against.

``bash scripts/test.sh`` starts one with ``scripts/milvus-local.sh`` and sets
``TEST_MILVUS_URI``. Without it, the first test that needs Milvus starts one for the session
(on loopback, in a temporary directory, stopped at the end); if that fails, the tests that
need Milvus fail with the reason (never skip).

Each test gets collections of its own (a unique ``milvus_collection_prefix``), dropped after it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "milvus-local.sh"


@pytest.fixture(scope="session")
def milvus_uri() -> Iterator[str]:
    """The URI of a Milvus server for this test session."""
    uri = os.environ.get("TEST_MILVUS_URI")
    if uri:
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="facetrail-milvus-") as directory:
        started = subprocess.run(["bash", str(SCRIPT), "start", directory],
                                 capture_output=True, text=True, timeout=900)
        try:
            if started.returncode != 0:
                pytest.fail(
                    "TEST_MILVUS_URI is not set and 'scripts/milvus-local.sh start' failed: "
                    f"{started.stderr.strip()[-600:]}. Run 'bash scripts/test.sh', or start a "
                    "server with 'bash scripts/milvus-local.sh start DIR' and export the URI "
                    "it prints as TEST_MILVUS_URI.", pytrace=False)
            yield started.stdout.strip()
        finally:
            subprocess.run(["bash", str(SCRIPT), "stop", directory], capture_output=True,
                           timeout=120, check=False)


@pytest.fixture
def milvus_settings(milvus_uri: str) -> Iterator[dict[str, Any]]:
    """Settings overrides of the milvus index back end, with collections of this test only."""
    prefix = f"t_{uuid.uuid4().hex[:12]}"
    yield {"milvus_uri": milvus_uri, "milvus_collection_prefix": prefix}
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_uri)
    try:
        for name in client.list_collections():
            if name.startswith(prefix + "_"):
                client.drop_collection(name)
    finally:
        client.close()
