"""Users, their tokens and browser sessions (only hashes of tokens and session ids are kept)."""

from __future__ import annotations

from typing import Any

from facetrail.audit import utc_now
from facetrail.errors import ConflictError, NotFoundError, PolicyError
from facetrail.store.base import Credential, UserRow
from facetrail.store.sql.core import IntegrityViolation, SQLCore

_USER_SQL = (
    "SELECT u.*, o.name AS org, (SELECT count(*) FROM tokens t WHERE t.user_id = u.id"
    " AND t.revoked_at IS NULL) AS active_tokens FROM users u JOIN orgs o ON o.id = u.org_id"
)


class AccountTables(SQLCore):
    def add_user(self, name: str, role: str, actor: str, org_id: int = 1) -> UserRow:
        try:
            with self._tx() as db:
                user_id = self._insert(
                    db,
                    "INSERT INTO users (name, role, created_at, created_by, org_id)"
                    " VALUES (?,?,?,?,?)",
                    (name, role, utc_now(), actor, org_id),
                )
        except IntegrityViolation as exc:
            if "unique" in str(exc).lower():
                raise ConflictError(f"a user named {name!r} already exists") from exc
            raise PolicyError(f"user rejected: {exc}") from exc
        return _user_row(self._one(_USER_SQL + " WHERE u.id=?", user_id))

    def get_user(self, name: str) -> UserRow:
        row = self._db.execute(_USER_SQL + " WHERE u.name=?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no user named {name!r}; see 'facetrail users list'")
        return _user_row(row)

    def list_users(self) -> list[UserRow]:
        return [_user_row(r) for r in self._db.execute(_USER_SQL + " ORDER BY u.name")]

    def add_token(self, user_id: int, token_hash: str) -> int:
        with self._tx() as db:
            return self._insert(
                db,
                "INSERT INTO tokens (user_id, token_hash, created_at) VALUES (?,?,?)",
                (user_id, token_hash, utc_now()),
            )

    def revoke_tokens(self, user_id: int) -> int:
        """Revoke every live token of a user (their sessions end with them)."""
        now = utc_now()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tokens SET revoked_at=? WHERE user_id=? AND revoked_at IS NULL",
                (now, user_id),
            )
            revoked = cur.rowcount
            db.execute(
                "UPDATE sessions SET ended_at=? WHERE ended_at IS NULL AND token_id IN"
                " (SELECT id FROM tokens WHERE user_id=?)",
                (now, user_id),
            )
        return revoked

    def credential(self, token_hash: str) -> Credential | None:
        row = self._db.execute(
            "SELECT id, user_id FROM tokens WHERE token_hash=? AND revoked_at IS NULL",
            (token_hash,),
        ).fetchone()
        if row is None:
            return None
        user = _user_row(self._one(_USER_SQL + " WHERE u.id=?", row["user_id"]))
        return Credential(user=user, token_id=row["id"])

    def add_session(self, id_hash: str, token_id: int, csrf: str, expires_at: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions (id_hash, token_id, csrf, created_at, expires_at)"
                " VALUES (?,?,?,?,?)",
                (id_hash, token_id, csrf, utc_now(), expires_at),
            )

    def session(self, id_hash: str, now: str) -> Credential | None:
        row = self._db.execute(
            "SELECT s.token_id, s.csrf, t.user_id FROM sessions s"
            " JOIN tokens t ON t.id = s.token_id"
            " WHERE s.id_hash=? AND s.ended_at IS NULL AND s.expires_at > ?"
            " AND t.revoked_at IS NULL",
            (id_hash, now),
        ).fetchone()
        if row is None:
            return None
        user = _user_row(self._one(_USER_SQL + " WHERE u.id=?", row["user_id"]))
        return Credential(user=user, token_id=row["token_id"], csrf=row["csrf"])

    def end_session(self, id_hash: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE sessions SET ended_at=? WHERE id_hash=? AND ended_at IS NULL",
                (utc_now(), id_hash),
            )


def _user_row(row: Any) -> UserRow:
    return UserRow(
        id=row["id"], name=row["name"], role=row["role"], created_at=row["created_at"],
        created_by=row["created_by"], active_tokens=row["active_tokens"],
        org_id=row["org_id"], org=row["org"],
    )
