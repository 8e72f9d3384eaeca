"""Users, roles and tokens. Tokens are random secrets shown once; only their sha256 is kept.

    admin     manages users, sources and ingest jobs
    analyst   searches (case reference and purpose required) and sees the results
    reviewer  confirms or rejects the candidates of someone else's search
    auditor   reads, exports and verifies their organisation's audit trail; cannot search
    oversight reads, exports and verifies every organisation's audit trail, and nothing else

Every user belongs to one organisation (facetrail.orgs), and sees only what it may.

On the command line the actor is the local operator, the OS user, who needs no account: a
search or review made there is recorded under that name, with no user id.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from facetrail.audit import os_user

ROLES = ("admin", "analyst", "reviewer", "auditor", "oversight")
ORG_ROLES = ("admin", "analyst", "reviewer", "auditor")
"""The roles that act within their organisation; oversight spans the deployment."""
TOKEN_PREFIX = "ft_"


def new_secret() -> str:
    """A token: 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """What the store keeps of a token or session id. A high-entropy secret needs no salt."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Actor:
    """Who does something: a user of the API or web app (their account id and name), or the
    local operator (the OS user, no account). The name is what the audit log records."""

    name: str
    user_id: int | None = None
    org: str = "default"
    """The organisation the actor acts for."""
    org_id: int = 1
    role: str | None = None
    """The account's role; None for the local operator."""

    @classmethod
    def local(cls, org: str = "default", org_id: int = 1) -> Actor:
        """The OS user running this process, acting for ``org``."""
        return cls(os_user(), org=org, org_id=org_id)

    @property
    def sees_every_org(self) -> bool:
        """Oversight reads the audit of every organisation (the local operator holds the
        store itself, and reads it too)."""
        return self.role in (None, "oversight")
