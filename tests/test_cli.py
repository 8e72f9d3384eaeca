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


def test_sources_add_checks_the_uri_against_its_kind(tmp_path: Path) -> None:
    """What can be checked when a source is added is not left to its first ingest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conftest import WARCS, run_cli

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(ASHANTI, photos / "a.jpg")
    (tmp_path / "no-path.csv").write_text("url\nhttps://example.org/a.jpg\n")
    (tmp_path / "good.csv").write_text("path\nphotos/a.jpg\n")
    (tmp_path / "list.txt").write_text("photos/a.jpg\n")
    (tmp_path / "rows.jsonl").write_text("[1, 2]\n")
    (tmp_path / "latin1.csv").write_bytes("pâth\n".encode("latin-1"))
    pq.write_table(pa.Table.from_pylist([{"url": "x"}]), tmp_path / "no-path.parquet")
    (tmp_path / "text.warc").write_text("hello, I am not a web archive\n")
    (tmp_path / "zip.wacz").write_text("not a zip")
    wiki = WARCS / "flashfrozen-jwat-recompressed.warc.gz"
    refused = {
        ("folder", ASHANTI): "policy_error",  # a folder source pointing at a file
        ("folder", tmp_path / "good.csv"): "policy_error",
        ("manifest", tmp_path / "no-path.csv"): "bad_manifest",
        ("manifest", tmp_path / "no-path.parquet"): "bad_manifest",
        ("manifest", tmp_path / "rows.jsonl"): "bad_manifest",
        ("manifest", tmp_path / "latin1.csv"): "bad_manifest",
        ("manifest", tmp_path / "list.txt"): "policy_error",
        ("manifest", photos): "policy_error",
        ("warc", photos): "policy_error",  # a folder of photos, no archive in it
        ("warc", ASHANTI): "policy_error",
        ("warc", tmp_path / "text.warc"): "bad_archive",
        ("warc", tmp_path / "zip.wacz"): "bad_archive",
    }
    home = tmp_path / "home"
    for (kind, uri), code in refused.items():
        proc = run_cli(home, "sources", "add", "s", "--kind", kind, "--uri", str(uri),
                       "--lawful-basis", "b", "--purpose", "p", "--retention-days", "30",
                       check=False)
        assert proc.returncode == 2, (kind, uri, proc.stdout)
        assert proc.stderr.startswith(f"error [{code}]: ") and proc.stderr.count("\n") == 1, (
            kind, uri, proc.stderr)
    assert "--kind warc" in run_cli(home, "sources", "add", "s", "--kind", "folder", "--uri",
                                    str(wiki), "--lawful-basis", "b", "--purpose", "p",
                                    "--retention-days", "30", check=False).stderr
    assert cli_json(home, "sources", "list") == []

    add_source(home, "m", tmp_path / "good.csv", kind="manifest")
    add_source(home, "w", wiki, kind="warc")
    add_source(home, "f", tmp_path)  # its folder holds good.csv
    # At ingest, a target of another kind is refused before the run; a folder source reads
    # an archive or a manifest given to it as what it is.
    for source, target in (("m", photos), ("w", photos / "a.jpg"), ("m", wiki)):
        proc = run_cli(home, "ingest", str(target), "--source", source, check=False)
        assert proc.returncode == 2 and "error [policy_error]: " in proc.stderr
        assert "Traceback" not in proc.stderr
    report = cli_json(home, "ingest", str(tmp_path / "good.csv"), "--source", "f")
    assert isinstance(report, dict) and report["images_new"] == 1
    runs = cli_json(home, "stats")
    assert isinstance(runs, dict) and runs["ingest_runs"] == 1


def test_an_empty_or_mistyped_home_is_said_plainly_and_never_created(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    work = tmp_path / "cwd"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-m", "facetrail", "stats"], capture_output=True,
                          text=True, env={**base, "FACETRAIL_HOME": ""}, cwd=work, timeout=600)
    assert proc.returncode == 2 and proc.stderr == (
        "error [config_error]: setting FACETRAIL_HOME: is empty: name a data directory, or "
        "unset it for the default\n")
    assert list(work.iterdir()) == []  # not the current directory
    bad = subprocess.run([sys.executable, "-m", "facetrail", "stats"], capture_output=True,
                         text=True, env={**base, "FACETRAIL_WORKERS": "many"}, timeout=600)
    assert bad.returncode == 2 and bad.stderr.startswith(
        "error [config_error]: setting FACETRAIL_WORKERS: ")

    # The SQLite store a data directory holds by default (in PostgreSQL test runs too).
    mistyped = tmp_path / "mistyped"
    probe = str(ASHANTI)
    for args in (("stats",), ("audit", "verify"), ("sources", "list"), ("errors",),
                 ("search", probe, "--case", "C", "--purpose", "p"), ("serve",),
                 ("ingest", "s")):
        proc = subprocess.run([sys.executable, "-m", "facetrail", "--home", str(mistyped),
                               *args], capture_output=True, text=True, env=base, timeout=600)
        assert proc.returncode == 2, args
        assert proc.stderr == (
            f"error [not_found]: no facetrail data directory at {mistyped} (it would be "
            "created by 'facetrail sources add'); check --home, --store and FACETRAIL_HOME\n"
        ), args
        assert not mistyped.exists()
    facetrail("--home", str(mistyped), "sources", "add", "s", "--kind", "folder", "--uri",
              str(PEOPLE / "Ashanti"), "--lawful-basis", "b", "--purpose", "p",
              "--retention-days", "30", env=base)  # the first step of a new data directory
    stats = json.loads(facetrail("--home", str(mistyped), "stats", "--json", env=base).stdout)
    assert stats["sources"] == 1


def _fresh_home(base: dict[str, str], home: Path) -> None:
    facetrail("--home", str(home), "sources", "add", "s", "--kind", "folder", "--uri",
              str(PEOPLE / "Ashanti"), "--lawful-basis", "b", "--purpose", "p",
              "--retention-days", "30", env=base)


def test_a_store_that_cannot_be_used_is_one_line_with_a_code(tmp_path: Path) -> None:
    """Environment failures, as root too (root ignores file modes): the store's file is a
    folder, or not a database; its folder cannot be made. Every command says so in one line."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    folder = tmp_path / "folder"
    (folder / "facetrail.db").mkdir(parents=True)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "facetrail.db").write_bytes(b"not a database, but a text file\n" * 100)
    (tmp_path / "file").write_text("x")
    add = ("sources", "add", "t", "--kind", "folder", "--uri", str(PEOPLE), "--lawful-basis",
           "b", "--purpose", "p", "--retention-days", "3")
    every = (("stats",), ("audit", "verify"), ("sources", "list"), ("errors",), add,
             ("search", str(ASHANTI), "--case", "C", "--purpose", "p"))
    cases = {
        ("--home", str(folder)): ("cannot open the store", every),
        ("--home", str(garbage)): ("is not a facetrail store (not a SQLite database)", every),
        ("--home", str(tmp_path / "h"), "--store",
         f"sqlite:///{tmp_path / 'file' / 'sub' / 'facetrail.db'}"):
            ("cannot create the folder of the store", (add,)),
    }
    for where, (says, commands) in cases.items():
        for args in commands:
            proc = subprocess.run([sys.executable, "-m", "facetrail", *where, *args],
                                  capture_output=True, text=True, env=base, timeout=600)
            assert proc.returncode == 2, (where, args, proc.stderr)
            assert proc.stderr.startswith("error [store_unavailable]: "), (where, args,
                                                                           proc.stderr)
            assert says in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_a_read_only_store_says_so(tmp_path: Path) -> None:
    """The engine's own read-only refusal, reached as root too: on SQLite the connection is
    made read-only with PRAGMA query_only (which fails writes with the very error a read-only
    file gives: SQLITE_READONLY); on PostgreSQL its transactions are made read-only (the
    error a hot standby gives)."""
    import facetrail
    from facetrail.errors import StoreUnavailableError

    with facetrail.open(tmp_path / "home") as ft:
        postgres = ft.store.dialect.name == "postgresql"  # type: ignore[attr-defined]
        ft.store._db.raw.execute(  # type: ignore[attr-defined]
            "SET default_transaction_read_only = on" if postgres else "PRAGMA query_only=ON")
        assert ft.sources() == []  # reading works
        try:
            ft.add_source("s", "folder", PEOPLE / "Ashanti", lawful_basis="b", purpose="p",
                          retention_days=30)
        except StoreUnavailableError as exc:
            where = "the PostgreSQL store" if postgres else (
                f"the store {tmp_path / 'home' / 'facetrail.db'}")
            assert str(exc).startswith(where) and " is read-only: " in str(exc), str(exc)
        else:
            raise AssertionError("a write to a read-only store succeeded")


def test_a_read_only_data_directory_as_a_user(tmp_path: Path) -> None:
    """The real thing, where file modes apply (not as root, which ignores them)."""
    if os.geteuid() == 0:
        import pytest

        pytest.skip("root ignores file modes; test_a_read_only_store_says_so covers it")
    base = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    home = tmp_path / "home"
    _fresh_home(base, home)
    for path in [home, *home.iterdir()]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        for args in (("stats",), ("audit", "verify"), ("ingest", "s")):
            proc = subprocess.run([sys.executable, "-m", "facetrail", "--home", str(home),
                                   *args], capture_output=True, text=True, env=base,
                                  timeout=600)
            assert proc.returncode == 2 and proc.stderr.startswith(
                "error [store_unavailable]: "), (args, proc.stderr)
            assert "Traceback" not in proc.stderr
    finally:
        for path in [home, *home.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
