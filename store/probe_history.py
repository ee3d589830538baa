"""SQL for the `probe_results` table (each provider's latest results) and the provider's `last_test`.
Callers own the transaction."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from store.provider_rows import ProviderNotFound, get_provider

HISTORY_KEPT_PER_PROVIDER = 100


def add_probe_result(conn: sqlite3.Connection, provider_id: int, result: dict[str, Any]) -> None:
    """Store `result` as the provider's last test, append it to its history and trim the history."""
    encoded = json.dumps(result, ensure_ascii=False)
    if conn.execute("UPDATE providers SET last_test = ? WHERE id = ?", (encoded, provider_id)).rowcount == 0:
        raise ProviderNotFound(provider_id)
    conn.execute("INSERT INTO probe_results (provider_id, checked_at, result) VALUES (?, ?, ?)",
                 (provider_id, result["checked_at"], encoded))
    conn.execute("DELETE FROM probe_results WHERE provider_id = ? AND id <= ("
                 "SELECT id FROM probe_results WHERE provider_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                 (provider_id, provider_id, HISTORY_KEPT_PER_PROVIDER))


def probe_history(conn: sqlite3.Connection, provider_id: int, limit: int) -> list[dict[str, Any]]:
    """The provider's latest results, newest first."""
    get_provider(conn, provider_id)
    rows = conn.execute("SELECT result FROM probe_results WHERE provider_id = ? ORDER BY id DESC LIMIT ?",
                        (provider_id, min(limit, HISTORY_KEPT_PER_PROVIDER)))
    return [json.loads(r[0]) for r in rows]
