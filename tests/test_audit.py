"""The audit log: hash-chained, append-only, and verification names the first tampered event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import facetrail
from conftest import PEOPLE, run_cli
from facetrail.audit import GENESIS, AuditEvent, chain_hash
from facetrail.engine import Facetrail
from facetrail.store import AuditQuery
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
    """Change the audit table behind facetrail's back, as someone with the database could."""
    url = store_url_of(home)
    raw_sql(url, *drop_audit_guards(url), *statements)


def verify(home: Path) -> dict[str, object]:
    proc = run_cli(home, "audit", "verify", "--json", check=False)
    result = json.loads(proc.stdout)
    assert proc.returncode == (0 if result["ok"] else 1)
    return dict(result)


def test_an_untouched_log_verifies(home: Path) -> None:
    result = verify(home)
    assert result["ok"] is True and result["events"] == 6 and result["first_bad_id"] is None
    assert "audit log intact: 6 events" in run_cli(home, "audit", "verify").stdout


def test_the_log_refuses_updates_and_deletes(home: Path) -> None:
    url = store_url_of(home)
    for statement in ("UPDATE audit SET actor='x' WHERE id=2", "DELETE FROM audit WHERE id=2"):
        with pytest.raises(Exception, match="append-only"):
            raw_sql(url, statement)
    assert verify(home)["ok"] is True


def test_a_changed_event_is_named(home: Path) -> None:
    tamper(home, "UPDATE audit SET details='{\"role\":\"admin\",\"user\":\"user1\"}' WHERE id=2")
    result = verify(home)
    assert result["ok"] is False and result["first_bad_id"] == 2
    assert "changed" in str(result["problem"])
    out = run_cli(home, "audit", "verify", check=False)
    assert out.returncode == 1 and "BROKEN at event 2" in out.stdout


def test_a_changed_actor_or_time_is_named(home: Path) -> None:
    tamper(home, "UPDATE audit SET at='2020-01-01T00:00:00.000000Z' WHERE id=5")
    assert verify(home)["first_bad_id"] == 5


def test_a_deleted_event_is_named_by_the_one_after_it(home: Path) -> None:
    tamper(home, "DELETE FROM audit WHERE id=3")
    result = verify(home)
    assert result["ok"] is False and result["first_bad_id"] == 4
    assert "removed" in str(result["problem"])


def test_deleting_and_renumbering_is_still_caught(home: Path) -> None:
    # Through ids no row holds: PostgreSQL checks the primary key row by row.
    tamper(home, "DELETE FROM audit WHERE id=3", "UPDATE audit SET id=id+100 WHERE id>3",
           "UPDATE audit SET id=id-101 WHERE id>100")
    result = verify(home)
    assert result["first_bad_id"] == 3 and "does not chain" in str(result["problem"])


def test_reordered_events_are_named(home: Path) -> None:
    tamper(
        home,
        "UPDATE audit SET id=100 WHERE id=2", "UPDATE audit SET id=2 WHERE id=3",
        "UPDATE audit SET id=3 WHERE id=100",
    )
    result = verify(home)
    assert result["ok"] is False and result["first_bad_id"] == 2


def test_an_inserted_event_is_named(home: Path) -> None:
    """A forged event, correctly chained to the one before it, breaks the link after it."""
    prev = str(raw_sql(store_url_of(home), "SELECT hash FROM audit WHERE id=3")[0][0])
    forged = AuditEvent(actor="mallory", action="user.add", details={"user": "m", "role": "admin"})
    forged_hash = chain_hash(prev, forged.canonical())
    tamper(
        home,
        "UPDATE audit SET id=id+100 WHERE id>3", "UPDATE audit SET id=id-99 WHERE id>100",
        "INSERT INTO audit (id, at, actor, action, case_ref, purpose, details, prev_hash, hash)"
        f" VALUES (4, '{forged.at}', 'mallory', 'user.add', NULL, NULL,"
        f" '{json.dumps(forged.details, sort_keys=True)}', '{prev}', '{forged_hash}')",
    )
    result = verify(home)
    assert result["events"] == 7
    assert result["ok"] is False and result["first_bad_id"] == 5
    assert "does not chain" in str(result["problem"])


def test_an_appended_event_with_a_made_up_hash_is_named(home: Path) -> None:
    tamper(
        home,
        "INSERT INTO audit (id, at, actor, action, details, prev_hash, hash) VALUES"
        f" (7, '2026-01-01T00:00:00.000000Z', 'mallory', 'login', '{{}}', '{GENESIS}',"
        f" '{'1' * 64}')",
    )
    result = verify(home)
    assert result["first_bad_id"] == 7


def test_cli_searches_join_the_chain_and_export_filters(gallery: Facetrail, tmp_path: Path) -> None:
    probe = PEOPLE / "Barack_Obama" / "Barack_Obama_0002.jpg"
    gallery.search(probe, case_ref="CASE-A", purpose="audit test", actor="ann")
    gallery.search(probe, case_ref="CASE-B", purpose="audit test", actor="bob")
    home = gallery.home
    gallery.close()
    run_cli(home, "search", str(probe), "--case", "CASE-A", "--purpose", "from the CLI")
    assert verify(home)["ok"] is True

    out = tmp_path / "case-a.jsonl"
    run_cli(home, "audit", "export", "--case", "CASE-A", "--since", "2000-01-01", "-o", str(out))
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["action"], e["case_ref"]) for e in events] == [("search", "CASE-A")] * 2
    assert [e["purpose"] for e in events] == ["audit test", "from the CLI"]
    assert all(len(e["details"]["probe_sha256"]) == 64 for e in events)
    assert events[0]["details"]["candidate_face_ids"]
    assert events[1]["prev_hash"] != events[0]["hash"]  # the CASE-B search lies between them
    later = run_cli(home, "audit", "export", "--since", "2999-01-01").stdout
    assert later == ""


def test_export_dates_are_parsed_checked_and_made_utc(home: Path) -> None:
    for bad in ("yesterday", "2026-13-45", "2026-02-30T25:61:00Z"):
        proc = run_cli(home, "audit", "export", "--since", bad, check=False)
        assert proc.returncode != 0 and proc.stdout == "", bad
        assert "is not a date or time" in proc.stderr and bad in proc.stderr
    everything = run_cli(home, "audit", "export", "--since", "2000-01-01").stdout
    assert len(everything.splitlines()) == 6
    first = json.loads(everything.splitlines()[0])["at"]
    # The same moment written with an offset, or as a date, selects the same events.
    hour, rest = first[11:13], first[13:19]
    shifted = f"{first[:10]}T{(int(hour) + 1) % 24:02d}{rest}+01:00"
    if int(hour) < 23:
        assert run_cli(home, "audit", "export", "--since", shifted).stdout == everything
    assert run_cli(home, "audit", "export", "--until", first[:10]).stdout == ""
    with facetrail.open(home) as engine:
        assert len(engine.audit_events(AuditQuery(since=first[:19] + "Z"))) == 6


def test_a_threshold_is_a_score(home: Path) -> None:
    proc = run_cli(home, "search", str(PEOPLE / "Ashanti" / "Ashanti_0001.jpg"),
                   "--case", "C", "--purpose", "p", "--threshold", "2", check=False)
    assert proc.returncode == 2 and "-1" in proc.stderr
