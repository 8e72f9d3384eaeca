"""The data directory, source listing and manifest provenance, through the installed CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import PEOPLE, add_source, cli_json

ASHANTI = PEOPLE / "Ashanti" / "Ashanti_0001.jpg"


def facetrail(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facetrail", *args], capture_output=True,
                          text=True, env=env, timeout=600, check=True)


def test_home_from_flag_then_environment_then_platform_dir(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    base["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    args = ("sources", "add", "s", "--kind", "folder", "--uri", str(PEOPLE / "Ashanti"),
            "--lawful-basis", "b", "--purpose", "p", "--retention-days", "30")

    facetrail(*args, env=base)
    assert (tmp_path / "xdg" / "facetrail" / "facetrail.db").exists()

    facetrail(*args, env={**base, "FACETRAIL_HOME": str(tmp_path / "env-home")})
    assert (tmp_path / "env-home" / "facetrail.db").exists()

    facetrail("--home", str(tmp_path / "flag-home"), *args,
              env={**base, "FACETRAIL_HOME": str(tmp_path / "env-home")})
    assert (tmp_path / "flag-home" / "facetrail.db").exists()
    listed = json.loads(facetrail("--home", str(tmp_path / "flag-home"), "sources", "list",
                                  "--json", env=base).stdout)
    assert [(s["name"], s["lawful_basis"], s["purpose"]) for s in listed] == [("s", "b", "p")]


def test_manifest_provenance_comes_back_with_a_match(tmp_path: Path) -> None:
    shutil.copy(ASHANTI, tmp_path / "a.jpg")
    manifest = tmp_path / "seen.jsonl"
    manifest.write_text(json.dumps({
        "path": "a.jpg", "source_url": "https://example.org/img/a.jpg",
        "page_urls": ["https://example.org/story", "https://example.org/gallery"],
        "captured_at": "2025-05-01T12:00:00Z", "title": "Press photo",
    }) + "\n")
    home = tmp_path / "home"
    add_source(home, "press", manifest, kind="manifest")
    report = cli_json(home, "ingest", "press")
    assert isinstance(report, dict) and (report["images_new"], report["faces"]) == (1, 1)
    out = cli_json(home, "search", str(ASHANTI), "--case", "c", "--purpose", "p")
    assert isinstance(out, dict)
    (seen,) = out["candidates"][0]["appearances"]
    assert seen == {
        "source": "press", "location": str(tmp_path / "a.jpg"),
        "source_url": "https://example.org/img/a.jpg",
        "page_url": "https://example.org/story",
        "page_urls": ["https://example.org/story", "https://example.org/gallery"],
        "captured_at": "2025-05-01T12:00:00Z", "title": "Press photo", "record_id": None,
        "gone_at": None,
    }


def test_settings_doc_lists_every_setting_with_its_default() -> None:
    from facetrail.settings import settings_table

    doc = (Path(__file__).parent.parent / "docs" / "settings.md").read_text()
    assert doc.endswith(settings_table())
