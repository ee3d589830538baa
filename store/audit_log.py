"""SQL for the `audit_events` table. Callers own the transaction."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

_COLUMNS = ("id", "at", "actor", "role", "action", "target_type", "target_id", "target_name", "fields",
            "request_id", "client", "count")


def insert_event(conn: sqlite3.Connection, event: dict[str, Any]) -> int:
    """Insert one record (`event` holds the columns but id; `fields` a list of field names)."""
    values = [event.get(c) for c in _COLUMNS[1:]]
    values[_COLUMNS.index("fields") - 1] = json.dumps(event.get("fields") or [])
    values[_COLUMNS.index("count") - 1] = event.get("count") or 1
    return conn.execute(f"INSERT INTO audit_events ({', '.join(_COLUMNS[1:])}) "  # fixed column names
                        f"VALUES ({', '.join('?' * (len(_COLUMNS) - 1))})", values).lastrowid


def count_denied_since(conn: sqlite3.Connection, client: str, since: str) -> bool:
    """Add one to the latest `auth.denied` record of `client` made at or after `since`; False if none."""
    row = conn.execute("SELECT id FROM audit_events WHERE client = ? AND action = 'auth.denied' AND at >= ? "
                       "ORDER BY id DESC LIMIT 1", (client, since)).fetchone()
    if row is None:
        return False
    conn.execute("UPDATE audit_events SET count = count + 1 WHERE id = ?", (row[0],))
    return True


def add_denied(conn: sqlite3.Connection, client: str, since: str, count: int) -> None:
    """Add `count` to the latest `auth.denied` record of `client` made at or after `since`."""
    conn.execute("UPDATE audit_events SET count = count + ? WHERE id = (SELECT id FROM audit_events WHERE "
                 "client = ? AND action = 'auth.denied' AND at >= ? ORDER BY id DESC LIMIT 1)", (count, client, since))


def list_events(conn: sqlite3.Connection, limit: int, before: int | None = None, action: str | None = None,
                actor: str | None = None, target_id: int | None = None) -> list[dict[str, Any]]:
    """Newest first."""
    clauses, params = [], []
    for column, value in (("action", action), ("actor", actor), ("target_id", target_id)):
        if value is not None:
            clauses.append(f"{column} = ?")  # column names from the fixed tuple above
            params.append(value)
    if before is not None:
        clauses.append("id < ?")
        params.append(before)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM audit_events{where} ORDER BY id DESC LIMIT ?",
                        params + [limit])
    events = []
    for row in rows:
        event = dict(zip(_COLUMNS, row, strict=True))
        event["fields"] = json.loads(event["fields"])
        events.append(event)
    return events


def keep_latest(conn: sqlite3.Connection, newest_id: int, keep: int) -> None:
    """Delete all but the `keep` records up to `newest_id` (ids have no gaps: records are only ever
    deleted from the oldest end, and a rolled-back insert gives its id back)."""
    conn.execute("DELETE FROM audit_events WHERE id <= ?", (newest_id - keep,))
