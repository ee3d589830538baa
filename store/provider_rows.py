"""SQL for the `providers` table. Callers own the transaction.

Rows become `Provider` objects in `_provider_from_row` only. Values are always bound parameters;
the only dynamic SQL is column names taken from the `_COLUMNS` whitelist.
"""

from __future__ import annotations

import json
import sqlite3
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

MAX_ID = 2**53 - 1  # every id must survive JSON and JavaScript exactly


class IdsExhausted(Exception):
    def __init__(self) -> None:
        super().__init__(f"no provider id is left: ids go up to {MAX_ID}")
        self.max_id = MAX_ID


class ProviderNotFound(Exception):
    def __init__(self, provider_id: int):
        super().__init__(f"provider {provider_id} does not exist")
        self.provider_id = provider_id


class DuplicateName(Exception):
    def __init__(self, name: str):
        super().__init__(f"a provider named {name!r} already exists (names are compared case-insensitively)")
        self.name = name


@dataclass
class Provider:
    id: int
    name: str
    type: str
    base_url: str
    api_key_ciphertext: str | None
    models: list[str]
    is_active: bool
    created_at: str
    updated_at: str
    last_test: dict[str, Any] | None = field(default=None)
    health_state: str = "unknown"  # up, down or unknown (the core's health.py says how it changes)


@dataclass(frozen=True)
class ProviderFilter:
    is_active: bool | None = None
    type: str | None = None
    name_contains: str | None = None
    ids: frozenset[int] | None = None  # only these (a token's scope); None = any


NO_FILTER = ProviderFilter()


def name_key(name: str) -> str:
    """What uniqueness and search compare: the Unicode-casefolded name, in NFC (casefolding can
    decompose a character)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


_SELECT = ("SELECT id, name, type, base_url, api_key_ciphertext, models, is_active, created_at, updated_at, "
           "last_test, health_state FROM providers")
# Column name -> how its Python value is stored. Also the whitelist for dynamic UPDATE statements.
_COLUMNS = {
    "name": lambda v: v,
    "type": lambda v: v,
    "base_url": lambda v: v,
    "api_key_ciphertext": lambda v: v,
    "models": lambda v: json.dumps(v, ensure_ascii=False),
    "is_active": lambda v: int(bool(v)),
    "created_at": lambda v: v,
    "updated_at": lambda v: v,
    "last_test": lambda v: None if v is None else json.dumps(v, ensure_ascii=False),
}


# The provider as the API shows it and as the backup stores it, built by SQLite's JSON functions:
# much faster than mapping rows to objects and json.dumps-ing them (bench/RESULTS.md), and no Python
# object per provider. models and last_test are stored as JSON text, json() embeds them as JSON.
# api_key_preview() is a SQL function: `connect()` registers one that answers null,
# `use_key_preview` one that reads keys. CAST(... AS BLOB) hands the JSON over as UTF-8 bytes, ready
# to send or write (a Python str holding a non-Latin-1 character such as the preview's "…" is larger).
# The API shape must stay the one `registry/schemas.py` describes (PROVIDER): tests/test_providers_api.py.
_BOOLEAN = "json(CASE WHEN {} THEN 'true' ELSE 'false' END)"
_API_JSON = (
    "CAST(json_object('id', id, 'name', name, 'type', type, 'base_url', base_url, 'models', json(models), "
    f"'is_active', {_BOOLEAN.format('is_active')}, "
    f"'has_api_key', {_BOOLEAN.format('api_key_ciphertext IS NOT NULL')}, "
    "'api_key_preview', api_key_preview(api_key_ciphertext), "
    "'created_at', created_at, 'updated_at', updated_at, 'last_test', json(last_test), "
    "'health', json_object('state', health_state, 'since', health_since, 'reason', health_reason)) AS BLOB)")
_BACKUP_JSON = (
    "CAST(json_object('id', id, 'name', name, 'type', type, 'base_url', base_url, 'api_key', api_key_ciphertext, "
    f"'models', json(models), 'is_active', {_BOOLEAN.format('is_active')}, "
    "'created_at', created_at, 'updated_at', updated_at, 'last_test', json(last_test)) AS BLOB)")


def use_key_preview(conn: sqlite3.Connection, preview: Callable[[str | None], str | None]) -> None:
    """Render `api_key_preview` in provider JSON with `preview(ciphertext)` on this connection."""
    conn.create_function("api_key_preview", 1, preview, deterministic=True)


def _provider_from_row(row: sqlite3.Row | tuple) -> Provider:
    (id_, name, type_, base_url, ciphertext, models, is_active, created_at, updated_at, last_test, health) = row
    return Provider(id=id_, name=name, type=type_, base_url=base_url, api_key_ciphertext=ciphertext,
                    models=json.loads(models), is_active=bool(is_active), created_at=created_at,
                    updated_at=updated_at, last_test=None if last_test is None else json.loads(last_test),
                    health_state=health)


def _where(filters: ProviderFilter) -> tuple[str, list]:
    clauses, params = [], []
    if filters.is_active is not None:
        clauses.append("is_active = ?")
        params.append(int(filters.is_active))
    if filters.type is not None:
        clauses.append("type = ?")
        params.append(filters.type)
    if filters.ids is not None:
        clauses.append("id IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(sorted(filters.ids)))
    if filters.name_contains:
        # instr(), not LIKE: '%' and '_' in the query are literal characters.
        clauses.append("instr(name_key, ?) > 0")
        params.append(name_key(filters.name_contains))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def list_providers(conn: sqlite3.Connection, filters: ProviderFilter = NO_FILTER) -> list[Provider]:
    """Every provider matching `filters`, ordered by id (pages are for the API: `list_provider_ids`)."""
    where, params = _where(filters)
    return [_provider_from_row(r) for r in conn.execute(_SELECT + where + " ORDER BY id", params)]


def list_provider_ids(conn: sqlite3.Connection, filters: ProviderFilter = NO_FILTER,
                      limit: int | None = None, offset: int = 0) -> tuple[list[int], int]:
    """The ids of one page of providers ordered by id, and how many match in all."""
    where, params = _where(filters)
    total = conn.execute("SELECT count(*) FROM providers" + where, params).fetchone()[0]
    rows = conn.execute("SELECT id FROM providers" + where + " ORDER BY id LIMIT ? OFFSET ?",
                        params + [-1 if limit is None else limit, offset])
    return [r[0] for r in rows], total


def provider_json(conn: sqlite3.Connection, provider_id: int) -> bytes:
    """One provider as its API JSON (UTF-8)."""
    row = conn.execute(f"SELECT {_API_JSON} FROM providers WHERE id = ?", (provider_id,)).fetchone()
    if row is None:
        raise ProviderNotFound(provider_id)
    return row[0]


def providers_json(conn: sqlite3.Connection, ids: Iterable[int]) -> dict[int, bytes]:
    """The API JSON (UTF-8) of those of `ids` that exist, by id."""
    rows = conn.execute(f"SELECT id, {_API_JSON} FROM providers WHERE id IN (SELECT value FROM json_each(?))",
                        (json.dumps(list(ids)),))
    return dict(rows.fetchall())


def backup_records_json(conn: sqlite3.Connection,
                        ids: Iterable[int] | None = None) -> Iterator[tuple[int, bytes]]:
    """(id, backup record JSON (UTF-8)) of every provider, or of those of `ids` that exist, by id."""
    if ids is None:
        yield from conn.execute(f"SELECT id, {_BACKUP_JSON} FROM providers ORDER BY id")
        return
    # json_each() takes the whole id list as one bound parameter, however long it is.
    yield from conn.execute(f"SELECT id, {_BACKUP_JSON} FROM providers WHERE id IN (SELECT value FROM json_each(?)) "
                            "ORDER BY id", (json.dumps(sorted(ids)),))


def first_provider_with_key(conn: sqlite3.Connection) -> Provider | None:
    row = conn.execute(_SELECT + " WHERE api_key_ciphertext IS NOT NULL ORDER BY id LIMIT 1").fetchone()
    return None if row is None else _provider_from_row(row)


def get_provider(conn: sqlite3.Connection, provider_id: int) -> Provider:
    row = conn.execute(_SELECT + " WHERE id = ?", (provider_id,)).fetchone()
    if row is None:
        raise ProviderNotFound(provider_id)
    return _provider_from_row(row)


def insert_provider(conn: sqlite3.Connection, values: dict[str, Any], provider_id: int | None = None) -> int:
    """Insert a provider from column values; `provider_id` keeps a given id (restore)."""
    columns = [c for c in _COLUMNS if c in values]  # whitelisted names only
    params = [_COLUMNS[c](values[c]) for c in columns]
    if provider_id is not None:
        columns.insert(0, "id")
        params.insert(0, provider_id)
    columns.append("name_key")
    params.append(name_key(values["name"]))
    sql = f"INSERT INTO providers ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    try:
        new_id = conn.execute(sql, params).lastrowid
    except sqlite3.IntegrityError as exc:
        _raise_if_duplicate_name(exc, values["name"])
        raise
    if new_id > MAX_ID:
        raise IdsExhausted()  # the caller's transaction (or savepoint) rolls the row back
    return new_id


def update_provider(conn: sqlite3.Connection, provider_id: int, values: dict[str, Any]) -> None:
    """Set the given columns of one provider."""
    columns = [c for c in _COLUMNS if c in values]  # whitelisted names only
    params = [_COLUMNS[c](values[c]) for c in columns]
    if "name" in values:
        columns.append("name_key")
        params.append(name_key(values["name"]))
    if not columns:
        get_provider(conn, provider_id)
        return
    sql = f"UPDATE providers SET {', '.join(c + ' = ?' for c in columns)} WHERE id = ?"
    try:
        cursor = conn.execute(sql, params + [provider_id])
    except sqlite3.IntegrityError as exc:
        _raise_if_duplicate_name(exc, values.get("name", ""))
        raise
    if cursor.rowcount == 0:
        raise ProviderNotFound(provider_id)


def delete_provider(conn: sqlite3.Connection, provider_id: int) -> None:
    if conn.execute("DELETE FROM providers WHERE id = ?", (provider_id,)).rowcount == 0:
        raise ProviderNotFound(provider_id)


def delete_all_providers(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM providers")


def restart_id_sequence(conn: sqlite3.Connection, previous: int) -> None:
    """After a restore replaced every row: new ids follow both the highest id present and the
    highest ever handed out before (`previous`), so an id is never given to a second provider,
    unless that would leave no id at all (a restore used the largest)."""
    highest = conn.execute("SELECT coalesce(max(id), 0) FROM providers").fetchone()[0]
    seq = max(highest, previous) if max(highest, previous) < MAX_ID else highest
    conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'providers'", (seq,))


def id_sequence(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'providers'").fetchone()
    return 0 if row is None else row[0]


def provider_ids(conn: sqlite3.Connection) -> set[int]:
    return {r[0] for r in conn.execute("SELECT id FROM providers")}


def provider_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM providers").fetchone()[0]


def set_api_key_ciphertexts(conn: sqlite3.Connection, ciphertexts: Iterable[tuple[int, str]]) -> None:
    conn.executemany("UPDATE providers SET api_key_ciphertext = ? WHERE id = ?",
                     [(c, i) for i, c in ciphertexts])


def _raise_if_duplicate_name(exc: sqlite3.IntegrityError, name: str) -> None:
    if "name_key" in str(exc):
        raise DuplicateName(name) from None
