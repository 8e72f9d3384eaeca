"""Audit events: typed, written after the action succeeded, chained by hash.

Each event's hash is ``sha256(prev_hash + canonical_json(event))`` where the canonical JSON
holds ``at, actor, action, case_ref, purpose, details`` with sorted keys, and ``org`` (the
organisation the event belongs to) when there is one. Changing, removing, inserting,
reordering or moving any event to another organisation breaks every hash after it.
"""

from __future__ import annotations

import getpass
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

GENESIS = "0" * 64


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def utc_bound(text: str, what: str = "a time") -> str:
    """``text`` (an ISO 8601 date, or date and time with ``Z``, an offset, or none for UTC) as
    the UTC time the log stores, to compare with events' times; InputError if it is not one."""
    from facetrail.errors import InputError

    value = text.strip()
    try:
        if len(value) == 10:
            moment = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    except ValueError:
        raise InputError(
            f"{what} {text!r} is not a date or time; use ISO 8601 such as 2026-11-01, "
            "2026-11-01T09:30:00Z or 2026-11-01T10:30:00+01:00"
        ) from None
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # getuser raises OSError or KeyError when no name can be found
        return "unknown"


@dataclass(frozen=True)
class AuditEvent:
    actor: str
    action: str
    details: dict[str, Any] = field(default_factory=dict)
    case_ref: str | None = None
    purpose: str | None = None
    at: str = field(default_factory=utc_now)
    org: str | None = None
    """The organisation the event belongs to; None for the deployment's own events."""

    def canonical(self) -> str:
        fields: dict[str, Any] = {
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "case_ref": self.case_ref,
            "purpose": self.purpose,
            "details": self.details,
        }
        if self.org is not None:  # events from before organisations hash as they did
            fields["org"] = self.org
        return canonical_json(fields)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainedEvent:
    """An event as stored: its position in the log and the hashes that chain it."""

    id: int
    event: AuditEvent
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        e = self.event
        return {"id": self.id, "at": e.at, "actor": e.actor, "action": e.action,
                "case_ref": e.case_ref, "purpose": e.purpose, "details": e.details,
                "org": e.org, "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    head: str
    """Hash of the last event: record it elsewhere to detect removal of events at the end."""
    first_bad_id: int | None = None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "head": self.head,
                "first_bad_id": self.first_bad_id, "problem": self.problem}


def verify(rows: list[ChainedEvent]) -> Verification:
    """Walk the log in id order and name the first event that breaks the chain.

    An edited event no longer hashes to its stored hash; a removed, inserted or moved event
    leaves a gap in the ids or an event whose ``prev_hash`` is not its predecessor's hash.
    """
    prev_hash, prev_id = GENESIS, 0
    for row in rows:
        problem = None
        if row.id != prev_id + 1:
            problem = (f"event {row.id} follows event {prev_id}: "
                       f"{row.id - prev_id - 1} event(s) before it were removed")
        elif row.prev_hash != prev_hash:
            problem = (f"event {row.id} does not chain to the event before it: an event "
                       "was inserted, removed or moved here")
        elif row.hash != chain_hash(prev_hash, row.event.canonical()):
            problem = f"event {row.id} was changed after it was written: its hash does not match"
        if problem is not None:
            return Verification(False, len(rows), rows[-1].hash, row.id, problem)
        prev_hash, prev_id = row.hash, row.id
    return Verification(True, len(rows), prev_hash)


@dataclass(frozen=True)
class Checkpoint:
    """The head of the log at one moment, kept outside the database by the operator
    (``facetrail audit checkpoint``): a later ``audit verify --expect`` then finds out whether
    events up to it were removed from the end, or the log rewritten from there."""

    id: int
    hash: str
    at: str | None = None
    """When the checkpointed event was written."""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "hash": self.hash, "at": self.at}

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """``HASH[:ID]``, or the JSON a checkpoint file holds; ``ValueError`` if neither.
        Without an id the hash is looked for anywhere in the log (id 0)."""
        text = text.strip()
        if text.startswith("{"):
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("a checkpoint is a JSON object with 'id' and 'hash'")
            value = f"{data.get('hash')}:{data.get('id')}"
            at = data.get("at")
        else:
            value, at = text, None
        digest, _, number = value.partition(":")
        digest = digest.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not an audit hash (64 hex digits): {digest!r}")
        if number and not number.isdigit():
            raise ValueError(f"not an event id: {number!r}")
        return cls(int(number or 0), digest, str(at) if at else None)


def check_checkpoint(rows: list[ChainedEvent], expected: Checkpoint,
                     verified: Verification) -> Verification:
    """``verified`` (of ``rows``), failed unless the log still holds the checkpointed event
    with its hash: fewer events (the end removed) or another hash there (rewritten) fail."""
    if not verified.ok:
        return verified
    problem = None
    if expected.id:
        row = rows[expected.id - 1] if expected.id <= len(rows) else None
        if row is None:
            problem = (f"the log ends at event {len(rows)} but the checkpoint names event "
                       f"{expected.id}: events were removed from its end")
        elif row.hash != expected.hash:
            problem = (f"event {expected.id} does not have the checkpointed hash: the log was "
                       "rewritten from there (or the checkpoint is of another log)")
    elif not any(r.hash == expected.hash for r in rows):
        problem = (f"no event has the checkpointed hash {expected.hash[:16]}...: events were "
                   "removed from the end of the log, or it was rewritten")
    if problem is None:
        return verified
    return Verification(False, verified.events, verified.head, expected.id or None, problem)
