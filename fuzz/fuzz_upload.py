"""Fuzz probe uploads over HTTP (``POST /api/probes``): the bytes as the request body of a
multipart form, through the whole application in this process (Starlette's multipart parser,
facetrail's upload guard and size limit, the image decoder, face detection). Every answer is
one of the statuses the API documents for it, never a 500 and never an exception.

The application runs over a data directory of its own, created when the harness starts, with
one analyst; its search and upload rates are lifted so that every input is parsed."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from fastapi.testclient import TestClient

    import facetrail
    from facetrail.settings import Settings
    from facetrail.web.app import create_app

BOUNDARY = "fuzzboundary"
ANSWERS = {201, 400, 401, 413, 415, 422}
"""Created, or refused as the API documents (docs/api.md)."""

_home = Path(tempfile.mkdtemp(prefix="ft-fuzz-upload-"))
atexit.register(shutil.rmtree, _home, True)
with facetrail.open(_home / "home") as _engine:
    _token = _engine.add_user("fuzzer", "analyst", actor="fuzz")[1]
_client = TestClient(create_app(Settings(home=_home / "home", search_rate=10**9,
                                         max_upload_bytes=256 * 1024)),
                     base_url="http://127.0.0.1")
_client.__enter__()
atexit.register(_client.__exit__, None, None, None)


def one_input(data: bytes) -> None:
    response = _client.post(
        "/api/probes", content=data,
        headers={"Authorization": f"Bearer {_token}",
                 "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status_code in ANSWERS, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers


if __name__ == "__main__":
    from harness import run

    run(one_input)
