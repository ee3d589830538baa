"""SQL for the `events` table (changes of a provider's health, and certificate warnings) and the
health columns of `providers`. Callers own the transaction."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from store.provider_rows import ProviderNotFound

_EVENT_COLUMNS = "id, provider_id, provider_name, type, at, from_state, to_state, reason, result"
EVENTS_KEPT_PER_PROVIDER = 1000  # a provider flapping every minute still keeps most of a day


@dataclass(frozen=True)
class HealthRow:
    """A provider's health as stored: its state and the streaks of results that lead to the next one."""
    state: str
    since: str | None
    reason: str | None
    online_streak: int
    failing_streak: int


def read_health(conn: sqlite3.Connection, provider_id: int) -> tuple[str, HealthRow]:
    """(the provider's name, its health)."""
    row = conn.execute("SELECT name, health_state, health_since, health_reason, online_streak, failing_streak "
                       "FROM providers WHERE id = ?", (provider_id,)).fetchone()
    if row is None:
        raise ProviderNotFound(provider_id)
    return row[0], HealthRow(*row[1:])


def write_health(conn: sqlite3.Connection, provider_id: int, health: HealthRow) -> None:
    conn.execute("UPDATE providers SET health_state = ?, health_since = ?, health_reason = ?, online_streak = ?, "
                 "failing_streak = ? WHERE id = ?",
                 (health.state, health.since, health.reason, health.online_streak, health.failing_streak,
                  provider_id))


def insert_event(conn: sqlite3.Connection, event: dict[str, Any]) -> int:
    """Insert one event (`event` as the API shows it, without its id), trim the provider's oldest
    beyond EVENTS_KEPT_PER_PROVIDER; returns the id."""
    event_id = conn.execute(
        "INSERT INTO events (provider_id, provider_name, type, at, from_state, to_state, reason, result) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (event["provider_id"], event["provider_name"], event["type"], event["at"], event["from"], event["to"],
         event["reason"], None if event["result"] is None else json.dumps(event["result"], ensure_ascii=False)),
    ).lastrowid
    conn.execute("DELETE FROM events WHERE provider_id = ? AND id <= ("
                 "SELECT id FROM events WHERE provider_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                 (event["provider_id"], event["provider_id"], EVENTS_KEPT_PER_PROVIDER))
    return event_id


def provider_events(conn: sqlite3.Connection, provider_id: int, limit: int) -> list[dict[str, Any]]:
    """The provider's latest events, newest first."""
    if conn.execute("SELECT 1 FROM providers WHERE id = ?", (provider_id,)).fetchone() is None:
        raise ProviderNotFound(provider_id)
    rows = conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE provider_id = ? ORDER BY id DESC LIMIT ?",
                        (provider_id, limit))
    return [_event_from_row(r) for r in rows]


def events_after(conn: sqlite3.Connection, after: int, limit: int,
                 provider_ids: frozenset[int] | None = None) -> list[dict[str, Any]]:
    """Events with an id above `after`, oldest first; only those of `provider_ids` when given."""
    if provider_ids is None:
        rows = conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
    else:
        rows = conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id > ? AND provider_id IN "
                            "(SELECT value FROM json_each(?)) ORDER BY id LIMIT ?",
                            (after, json.dumps(sorted(provider_ids)), limit))
    return [_event_from_row(r) for r in rows]


def _event_from_row(row: tuple) -> dict[str, Any]:
    (id_, provider_id, provider_name, type_, at, from_state, to_state, reason, result) = row
    return {"id": id_, "provider_id": provider_id, "provider_name": provider_name, "type": type_, "at": at,
            "from": from_state, "to": to_state, "reason": reason,
            "result": None if result is None else json.loads(result)}
