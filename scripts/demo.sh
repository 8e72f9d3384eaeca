#!/usr/bin/env bash
# Set up a virtual environment (.venv), index the sample photos that ship with facetrail
# into ./demo-home (SQLite store + FAISS index), and search them with a group photo.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
ft() { .venv/bin/facetrail --home demo-home "$@"; }
rm -rf demo-home
set -x
ft sources add samples --kind folder --uri tests/data/faces/people \
    --lawful-basis "public sample photos shipped with facetrail (see tests/data/README.md)" \
    --purpose "demonstration" --retention-days 1
ft ingest samples
ft search tests/data/faces/group/kit_with_rose.jpg --case DEMO-1 \
    --purpose "demonstration of a two-face probe" --all-faces --top 3
ft stats
