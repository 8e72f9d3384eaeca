"""Users, roles and tokens. Tokens are random secrets shown once; only their sha256 is kept.

    admin     manages users, sources and ingest jobs
    analyst   searches (case reference and purpose required) and sees the results
    reviewer  confirms or rejects the candidates of someone else's search
    auditor   reads, exports and verifies the audit trail; cannot search
"""

from __future__ import annotations

import hashlib
import secrets

ROLES = ("admin", "analyst", "reviewer", "auditor")
TOKEN_PREFIX = "ft_"


def new_secret() -> str:
    """A token: 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """What the store keeps of a token or session id. A high-entropy secret needs no salt."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
