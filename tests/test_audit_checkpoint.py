"""A checkpoint of the audit log's head, kept outside the database, shows what the chain
alone cannot: events removed from the end of the log, or the log rewritten from a point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import facetrail
from conftest import run_cli
from facetrail.audit import AuditEvent, canonical_json, chain_hash
from stores import drop_audit_guards, raw_sql, store_url_of


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A store holding six audit events (user changes), ids 1..6."""
    home = tmp_path / "home"
    with facetrail.open(home) as engine:
        for i, role in enumerate(("admin", "analyst", "reviewer", "auditor", "analyst")):
            engine.add_user(f"user{i}", role, actor="setup")
        engine.revoke_user("user4", actor="setup")
    return home


def tamper(home: Path, *statements: str) -> None:
    url = store_url_of(home)
    raw_sql(url, *drop_audit_guards(url), *statements)


def verify(home: Path, expect: str) -> tuple[int, dict[str, object]]:
    proc = run_cli(home, "audit", "verify", "--expect", expect, "--json", check=False)
    return proc.returncode, json.loads(proc.stdout)


def test_a_checkpoint_detects_a_truncated_log(home: Path, tmp_path: Path) -> None:
    kept = tmp_path / "elsewhere" / "head.json"
    kept.parent.mkdir()
    run_cli(home, "audit", "checkpoint", "--out", str(kept))
    point = json.loads(kept.read_text())
    assert point["id"] == 6 and len(point["hash"]) == 64 and point["at"]
    assert verify(home, str(kept))[0] == 0
    assert verify(home, f"{point['hash']}:6")[0] == 0
    assert verify(home, point["hash"])[0] == 0
    # Later events do not matter: the checkpointed one is still there.
    with facetrail.open(home) as engine:
        engine.add_user("late", "analyst", actor="setup")
    assert verify(home, str(kept))[0] == 0
    # Remove the last two events: the chain alone still verifies, the checkpoint does not.
    tamper(home, "DELETE FROM audit WHERE id >= 6")
    assert run_cli(home, "audit", "verify", check=False).returncode == 0
    code, result = verify(home, str(kept))
    assert code == 1 and result["ok"] is False
    assert "removed from its end" in str(result["problem"]), result
    code, result = verify(home, point["hash"])
    assert code == 1 and "removed from the end" in str(result["problem"]), result


def test_a_checkpoint_detects_a_rewritten_tail(home: Path, tmp_path: Path) -> None:
    """Rewritten from event 5 on, with valid hashes: the chain verifies, the head differs."""
    head = run_cli(home, "audit", "checkpoint", "--json").stdout
    url = store_url_of(home)
    rows = raw_sql(url, "SELECT id, hash FROM audit ORDER BY id")
    prev = str(rows[3][1])
    forged = AuditEvent(actor="setup", action="user.add", details={"user": "ghost"},
                        at="2026-01-01T00:00:00.000000Z")
    digest = chain_hash(prev, forged.canonical())
    tamper(home, "DELETE FROM audit WHERE id >= 5",
           "INSERT INTO audit (id, at, actor, action, case_ref, purpose, details, prev_hash, "
           f"hash) VALUES (5, '{forged.at}', 'setup', 'user.add', NULL, NULL, "
           f"'{canonical_json(forged.details)}', '{prev}', '{digest}')")
    assert run_cli(home, "audit", "verify", check=False).returncode == 0
    code, result = verify(home, head)
    assert code == 1 and "removed from its end" in str(result["problem"]), (head, result)
    code, result = verify(home, f"{rows[4][1]}:5")  # an earlier checkpoint, of event 5
    assert code == 1 and "rewritten" in str(result["problem"]), result


@pytest.mark.parametrize("value", ["", "nothex", "a" * 63, "a" * 64 + ":x", "/nonexistent/file"])
def test_a_bad_expectation_is_a_usage_error(home: Path, value: str) -> None:
    proc = run_cli(home, "audit", "verify", "--expect", value, check=False)
    assert proc.returncode == 2 and "--expect" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
