"""SQL for the `api_tokens` table. Callers own the transaction. Only a token's SHA-256 is stored."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass


class TokenNotFound(Exception):
    def __init__(self, token: int | str):
        super().__init__(f"token {token!r} does not exist")
        self.token = token


class DuplicateTokenName(Exception):
    def __init__(self, name: str):
        super().__init__(f"a token named {name!r} already exists")
        self.name = name


@dataclass(frozen=True)
class TokenRow:
    id: int
    name: str
    role: str
    providers: tuple[int, ...] | None
    created_at: str
    expires_at: str | None
    last_used_at: str | None


_SELECT = "SELECT id, name, role, providers, created_at, expires_at, last_used_at FROM api_tokens"


def _token_from_row(row: tuple) -> TokenRow:
    id_, name, role, providers, created_at, expires_at, last_used_at = row
    return TokenRow(id_, name, role, None if providers is None else tuple(json.loads(providers)), created_at,
                    expires_at, last_used_at)


def insert_token(conn: sqlite3.Connection, name: str, name_key: str, role: str, providers: list[int] | None,
                 secret_sha256: str, created_at: str, expires_at: str | None) -> int:
    try:
        return conn.execute(
            "INSERT INTO api_tokens (name, name_key, role, providers, secret_sha256, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, name_key, role, None if providers is None else json.dumps(providers), secret_sha256, created_at,
             expires_at)).lastrowid
    except sqlite3.IntegrityError as exc:
        if "name_key" in str(exc):
            raise DuplicateTokenName(name) from None
        raise


def list_tokens(conn: sqlite3.Connection) -> list[TokenRow]:
    return [_token_from_row(r) for r in conn.execute(_SELECT + " ORDER BY id")]


def get_token(conn: sqlite3.Connection, token_id: int) -> TokenRow:
    row = conn.execute(_SELECT + " WHERE id = ?", (token_id,)).fetchone()
    if row is None:
        raise TokenNotFound(token_id)
    return _token_from_row(row)


def token_by_name_key(conn: sqlite3.Connection, name_key: str) -> TokenRow:
    row = conn.execute(_SELECT + " WHERE name_key = ?", (name_key,)).fetchone()
    if row is None:
        raise TokenNotFound(name_key)
    return _token_from_row(row)


def token_by_secret_hash(conn: sqlite3.Connection, secret_sha256: str) -> TokenRow | None:
    row = conn.execute(_SELECT + " WHERE secret_sha256 = ?", (secret_sha256,)).fetchone()
    return None if row is None else _token_from_row(row)


def delete_token(conn: sqlite3.Connection, token_id: int) -> None:
    if conn.execute("DELETE FROM api_tokens WHERE id = ?", (token_id,)).rowcount == 0:
        raise TokenNotFound(token_id)


def set_last_used(conn: sqlite3.Connection, token_id: int, at: str) -> None:
    conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (at, token_id))


def token_count(conn: sqlite3.Connection, role: str | None = None, valid_at: str | None = None) -> int:
    """How many tokens (of `role`; not expired at `valid_at`)."""
    sql, params = "SELECT count(*) FROM api_tokens WHERE 1 = 1", []
    if role is not None:
        sql += " AND role = ?"
        params.append(role)
    if valid_at is not None:
        sql += " AND (expires_at IS NULL OR expires_at > ?)"
        params.append(valid_at)
    return conn.execute(sql, params).fetchone()[0]


def remove_from_scopes(conn: sqlite3.Connection, provider_ids: set[int]) -> None:
    """Take providers that no longer exist out of every token's scope, so that a scope never
    comes to cover a provider it was not given."""
    rows = conn.execute("SELECT id, providers FROM api_tokens WHERE providers IS NOT NULL").fetchall()
    for token_id, providers in rows:
        kept = [i for i in json.loads(providers) if i not in provider_ids]
        if len(kept) != len(json.loads(providers)):
            conn.execute("UPDATE api_tokens SET providers = ? WHERE id = ?", (json.dumps(kept), token_id))
