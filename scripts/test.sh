#!/usr/bin/env bash
# Set up a virtual environment (.venv) and run every check and test: ruff, mypy, the whole
# suite on the embedded SQLite store, then the store, CLI and web tests again on a throwaway
# PostgreSQL cluster (installed from Debian's packages when missing, started on 127.0.0.1 and
# stopped at the end). A Milvus server (scripts/milvus-local.sh, on loopback only) runs for the
# index tests of the milvus back end. Extra arguments go to both pytest runs, e.g.
# `bash scripts/test.sh -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
# The browser tests drive Debian's chromium (never a browser downloaded by Playwright).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev,ray]'
.venv/bin/ruff check src tests bench fuzz
.venv/bin/mypy

pgdir=$(mktemp -d "${TMPDIR:-/tmp}/facetrail-pg.XXXXXX")
chmod 755 "$pgdir"
milvusdir=$(mktemp -d "${TMPDIR:-/tmp}/facetrail-milvus.XXXXXX")
stop_servers() {
    bash scripts/postgres-local.sh stop "$pgdir" || true
    rm -rf "$pgdir"
    bash scripts/milvus-local.sh stop "$milvusdir" || true
    rm -rf "$milvusdir"
}
trap stop_servers EXIT
TEST_POSTGRES_URL=$(bash scripts/postgres-local.sh start "$pgdir")
export TEST_POSTGRES_URL
# The Milvus server: its own environment is installed once (~1 min), it starts in ~10 s.
TEST_MILVUS_URI=$(bash scripts/milvus-local.sh start "$milvusdir")
export TEST_MILVUS_URI

.venv/bin/python -m pytest "$@"
# The tests of everything that reads or writes the store, on PostgreSQL (tests/stores.py).
TEST_STORE=postgresql .venv/bin/python -m pytest -p no:cacheprovider \
    tests/test_cli.py tests/test_audit.py tests/test_users.py tests/test_search.py \
    tests/test_ingest.py tests/test_index.py tests/test_index_tiers.py tests/test_models.py \
    tests/test_runtime.py tests/test_casework.py tests/test_orgs.py tests/test_api.py \
    tests/test_api_roles.py tests/test_api_media.py tests/test_api_jobs.py \
    tests/test_api_limits.py tests/test_api_csrf.py tests/test_api_docs.py \
    tests/test_api_rights.py tests/test_browser.py tests/test_browser_rights.py \
    tests/test_rights.py tests/test_provenance.py tests/test_subject_access.py "$@"
