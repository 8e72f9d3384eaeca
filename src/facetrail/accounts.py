"""Users, roles and tokens. Tokens are random secrets shown once; only their sha256 is kept.

    admin     manages users, sources and ingest jobs
    analyst   searches (case reference and purpose required) and sees the results
    reviewer  confirms or rejects the candidates of someone else's search
    auditor   reads, exports and verifies the audit trail; cannot search

On the command line the actor is the local operator, the OS user, who needs no account: a
search or review made there is recorded under that name, with no user id.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from facetrail.audit import os_user

ROLES = ("admin", "analyst", "reviewer", "auditor")
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

    @classmethod
    def local(cls) -> Actor:
        """The OS user running this process."""
        return cls(os_user())
