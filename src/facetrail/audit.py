"""Audit events: typed, written after the action succeeded, chained by hash.

Each event's hash is ``sha256(prev_hash + canonical_json(event))`` where the canonical JSON
holds ``at, actor, action, case_ref, purpose, details`` with sorted keys. Changing, removing,
inserting or reordering any event breaks every hash after it.
"""

from __future__ import annotations

import getpass
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


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

    def canonical(self) -> str:
        return canonical_json(
            {
                "at": self.at,
                "actor": self.actor,
                "action": self.action,
                "case_ref": self.case_ref,
                "purpose": self.purpose,
                "details": self.details,
            }
        )


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()
