"""Named API tokens: created with a role, an optional provider scope and expiry, shown once
(`prt_` + 43 characters of base64url, 256 random bits), stored as their SHA-256 only, revoked.

Authentication is on as soon as BACKEND_ADMIN_TOKEN is set or one token exists. Tokens created or
revoked by the command line reach the running server at once: each authentication reads the token
from the database, and whether authentication is on is looked up whenever the database changed.
`last_used_at` is written at most once a minute per token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any

from registry.access import ADMIN_TOKEN_ACTOR, CLI_ACTOR, Actor
from registry.audit import AuditLog
from registry.errors import Conflict, Invalid, NotFound
from registry.fields import normalize_name
from registry.schemas import token_create_validator, validation_errors
from registry.read_cache import CommitWatcher
from registry.timestamps import utc_timestamp
from store import api_tokens
from store.database import transaction
from store.provider_rows import name_key

TOKEN_PREFIX = "prt_"
_TOKEN_SHAPE = re.compile(r"prt_[A-Za-z0-9_-]{43}")
LAST_USED_EVERY_SECONDS = 60
MAX_EXPIRY_DAYS = 3650


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def public_record(token: api_tokens.TokenRow) -> dict[str, Any]:
    record = asdict(token)
    record["providers"] = None if token.providers is None else list(token.providers)
    return record


class TokenService:
    def __init__(self, conn: sqlite3.Connection, audit: AuditLog, admin_token: str | None):
        self._conn = conn
        self._audit = audit
        self._admin_token = admin_token
        self._watcher = CommitWatcher(conn)
        self._count = api_tokens.token_count(conn)
        self._last_used_written: dict[int, float] = {}

    # -- who is calling -------------------------------------------------------------------------

    def auth_enabled_now(self) -> bool:
        """auth_enabled, looking at the database itself."""
        return self._admin_token is not None or api_tokens.token_count(self._conn) > 0

    @property
    def auth_enabled(self) -> bool:
        """Sees a token created by another process (the CLI) at once, at the cost of one stat per
        request while none exists (see CommitWatcher.changed_elsewhere_now)."""
        if self._admin_token is not None:
            return True
        if self._watcher.changed_elsewhere_now():
            self._count = api_tokens.token_count(self._conn)
        return self._count > 0

    def authenticate(self, provided: str) -> Actor | None:
        """The actor a bearer secret stands for, or None (unknown, revoked or expired)."""
        if self._admin_token is not None and hmac.compare_digest(provided.encode(), self._admin_token.encode()):
            return Actor(ADMIN_TOKEN_ACTOR, "admin")
        if not _TOKEN_SHAPE.fullmatch(provided):
            return None
        self._follow_other_processes()
        token = api_tokens.token_by_secret_hash(self._conn, secret_hash(provided))
        if token is None or (token.expires_at is not None and token.expires_at <= utc_timestamp()):
            return None
        self._note_use(token.id)
        return Actor(token.name, token.role, token.id,
                     None if token.providers is None else frozenset(token.providers))

    # -- managing tokens ------------------------------------------------------------------------

    def create(self, name: str, role: str, providers: list[int] | None, expires_in_days: int | None,
               actor: Actor) -> tuple[dict[str, Any], str]:
        """The new token's record and its secret (shown this once). The same rules whether it
        comes from the API or the command line."""
        body = {"name": name, "role": role, **({"providers": providers} if providers is not None else {}),
                **({"expires_in_days": expires_in_days} if expires_in_days is not None else {})}
        errors = validation_errors(token_create_validator, body)
        if errors:
            raise Invalid("The token is invalid: " + "; ".join(f"{e['path']} {e['message']}" for e in errors[:3])
                          + ".", errors)
        name = normalize_name(name)
        if role != "admin" and not self.auth_enabled_now() and actor.name != CLI_ACTOR:
            raise Conflict("The first token must be an admin token: this one switches authentication on, and "
                           "without an admin nobody could manage the registry through the API any more.")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = utc_timestamp()
        expires_at = None if expires_in_days is None else (
            datetime.now(timezone.utc) + timedelta(days=expires_in_days)).isoformat(timespec="milliseconds") \
            .replace("+00:00", "Z")
        with transaction(self._conn) as conn:
            try:
                token_id = api_tokens.insert_token(conn, name, name_key(name), role,
                                                   None if providers is None else sorted(set(providers)),
                                                   secret_hash(secret), now, expires_at)
            except api_tokens.DuplicateTokenName:
                raise Conflict(f"A token named {name!r} already exists (names are compared case-insensitively).") \
                    from None
            self._audit.record(conn, actor, "token.create", "token", token_id, name, ["name", "role", "providers",
                                                                                    "expires_at"])
        self._count = api_tokens.token_count(self._conn)
        return public_record(api_tokens.get_token(self._conn, token_id)), secret

    def list(self) -> list[dict[str, Any]]:
        return [public_record(t) for t in api_tokens.list_tokens(self._conn)]

    def get(self, token_id: int) -> dict[str, Any]:
        try:
            return public_record(api_tokens.get_token(self._conn, token_id))
        except api_tokens.TokenNotFound:
            raise NotFound(f"Token {token_id} does not exist.") from None

    def revoke(self, token_id: int | None, actor: Actor, name: str | None = None,
               allow_last_admin: bool = False) -> str:
        """Delete a token (by id, or by name from the command line); returns its name. Through the
        API the last admin token cannot go while BACKEND_ADMIN_TOKEN is unset: every admin would be
        locked out (the command line can, which reopens a loopback-only server)."""
        with transaction(self._conn) as conn:
            try:
                token = (api_tokens.get_token(conn, token_id) if name is None
                         else api_tokens.token_by_name_key(conn, name_key(normalize_name(name))))
            except api_tokens.TokenNotFound:
                raise NotFound(f"Token {token_id if name is None else name!r} does not exist.") from None
            if (not allow_last_admin and self._admin_token is None and token.role == "admin"
                    and api_tokens.token_count(conn, "admin", valid_at=utc_timestamp()) <= 1):
                raise Conflict("This is the last admin token and BACKEND_ADMIN_TOKEN is not set: revoking it would "
                               "lock every admin out. Create another admin token first (or use "
                               "python server.py --revoke-token).")
            api_tokens.delete_token(conn, token.id)
            self._audit.record(conn, actor, "token.revoke", "token", token.id, token.name)
        self._count = api_tokens.token_count(self._conn)
        return token.name

    # -- internals ------------------------------------------------------------------------------

    def _note_use(self, token_id: int) -> None:
        now = time.monotonic()
        if now - self._last_used_written.get(token_id, -LAST_USED_EVERY_SECONDS) < LAST_USED_EVERY_SECONDS:
            return
        self._last_used_written[token_id] = now
        with transaction(self._conn) as conn:
            api_tokens.set_last_used(conn, token_id, utc_timestamp())

    def _follow_other_processes(self) -> None:
        if self._watcher.changed_elsewhere():
            self._count = api_tokens.token_count(self._conn)
