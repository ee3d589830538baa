"""SQL for the `probe_results` table (each provider's latest results) and the provider's `last_test`
and health columns. Callers own the transaction."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable

from store.events import HealthRow
from store.provider_rows import get_provider

HISTORY_KEPT_PER_PROVIDER = 100


def add_probe_results(conn: sqlite3.Connection, entries: Iterable[tuple[int, dict[str, Any], HealthRow]]) -> None:
    """For each (provider id, result, health once it is counted): store the result as the provider's
    last test and its health, append it to its history, and trim the history. Every provider must
    exist (`store.events.read_health` says which do). A few statements for any number of results:
    a bulk test of a thousand providers is one write."""
    rows = [(provider_id, json.dumps(result, ensure_ascii=False), result["checked_at"], health)
            for provider_id, result, health in entries]
    if not rows:
        return
    conn.executemany("UPDATE providers SET last_test = ?, health_state = ?, health_since = ?, health_reason = ?, "
                     "online_streak = ?, failing_streak = ?, warned_certificate = ? WHERE id = ?",
                     [(encoded, h.state, h.since, h.reason, h.online_streak, h.failing_streak, h.warned_certificate,
                       provider_id) for provider_id, encoded, _, h in rows])
    conn.executemany("INSERT INTO probe_results (provider_id, checked_at, result) VALUES (?, ?, ?)",
                     [(provider_id, checked_at, encoded) for provider_id, encoded, checked_at, _ in rows])
    conn.execute("DELETE FROM probe_results WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER "
                 "(PARTITION BY provider_id ORDER BY id DESC) AS newer FROM probe_results WHERE provider_id IN "
                 "(SELECT value FROM json_each(?))) WHERE newer > ?)",
                 (json.dumps(sorted({r[0] for r in rows})), HISTORY_KEPT_PER_PROVIDER))


def probe_history(conn: sqlite3.Connection, provider_id: int, limit: int) -> list[dict[str, Any]]:
    """The provider's latest results, newest first."""
    get_provider(conn, provider_id)
    rows = conn.execute("SELECT result FROM probe_results WHERE provider_id = ? ORDER BY id DESC LIMIT ?",
                        (provider_id, min(limit, HISTORY_KEPT_PER_PROVIDER)))
    return [json.loads(r[0]) for r in rows]
