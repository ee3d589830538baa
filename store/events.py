"""SQL for the `events` table (changes of a provider's health, and certificate warnings) and the
health columns of `providers`. Callers own the transaction."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable

from store.provider_rows import ProviderNotFound

_EVENT_COLUMNS = "id, provider_id, provider_name, type, at, from_state, to_state, reason, result"
EVENTS_KEPT_PER_PROVIDER = 1000  # a provider flapping every minute still keeps most of a day


@dataclass(frozen=True)
class HealthRow:
    """A provider's health as stored: its state, the streaks of results that lead to the next one,
    and the certificate it was last warned about."""
    state: str
    since: str | None
    reason: str | None
    online_streak: int
    failing_streak: int
    warned_certificate: str | None = None


def read_health(conn: sqlite3.Connection, provider_ids: Iterable[int]) -> dict[int, tuple[str, HealthRow]]:
    """(name, health) of those of `provider_ids` that exist, by id."""
    rows = conn.execute("SELECT id, name, health_state, health_since, health_reason, online_streak, failing_streak, "
                        "warned_certificate FROM providers WHERE id IN (SELECT value FROM json_each(?))",
                        (json.dumps(list(provider_ids)),))
    return {row[0]: (row[1], HealthRow(*row[2:])) for row in rows}


def insert_events(conn: sqlite3.Connection, events: list[dict[str, Any]]) -> int:
    """Insert events (as the API shows them, without ids) in order and trim each provider's oldest
    beyond EVENTS_KEPT_PER_PROVIDER; returns the id they follow (theirs are the next ones)."""
    after = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
    conn.executemany(
        "INSERT INTO events (provider_id, provider_name, type, at, from_state, to_state, reason, result) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(e["provider_id"], e["provider_name"], e["type"], e["at"], e["from"], e["to"], e["reason"],
          None if e["result"] is None else json.dumps(e["result"], ensure_ascii=False)) for e in events])
    conn.execute("DELETE FROM events WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER "
                 "(PARTITION BY provider_id ORDER BY id DESC) AS newer FROM events WHERE provider_id IN "
                 "(SELECT value FROM json_each(?))) WHERE newer > ?)",
                 (json.dumps(sorted({e["provider_id"] for e in events})), EVENTS_KEPT_PER_PROVIDER))
    return after


# An event as the API shows it, rendered by SQLite (as webhook bodies are built from many at once).
EVENT_JSON = ("json_object('id', id, 'provider_id', provider_id, 'provider_name', provider_name, 'type', type, "
              "'at', at, 'from', from_state, 'to', to_state, 'reason', reason, 'result', json(result))")


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
