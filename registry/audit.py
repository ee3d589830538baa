"""The audit log: one record per change and per secret read, written in the transaction of what it
records (one exists only with the other), field names only, never values. Refused requests
(`auth.denied`) count into one record per client address and minute, so a flood of bad tokens
cannot flood the disk. The latest `keep` records are kept."""

from __future__ import annotations

import sqlite3
from typing import Any

from registry.access import Actor
from registry.timestamps import utc_timestamp
from store import audit_log
from store.database import transaction

TARGET_TYPES = ("provider", "token", "webhook", "inventory")
AUDIT_ACTIONS = ("provider.create", "provider.update", "provider.delete", "provider.sync_models", "inventory.restore",
                 "inventory.export", "credentials.read", "token.create", "token.revoke", "auth.denied")


class AuditLog:
    def __init__(self, conn: sqlite3.Connection, keep: int):
        self._conn = conn
        self.keep = keep

    def record(self, conn: sqlite3.Connection, actor: Actor, action: str, target_type: str,
               target_id: int | None = None, target_name: str | None = None, fields: list[str] | None = None) -> None:
        """Write one record on `conn`, inside the caller's transaction."""
        newest = audit_log.insert_event(conn, {
            "at": utc_timestamp(), "actor": actor.name, "role": actor.role, "action": action,
            "target_type": target_type, "target_id": target_id, "target_name": target_name,
            "fields": sorted(fields or []), "request_id": actor.request_id, "client": actor.client})
        audit_log.keep_latest(conn, newest, self.keep)

    def denied(self, actor: Actor) -> None:
        """A 401 or 403: counted into the client's record of this minute, or a new one."""
        now = utc_timestamp()
        with transaction(self._conn) as conn:
            if not audit_log.count_denied_since(conn, actor.client or "-", now[:16]):
                self.record(conn, actor, "auth.denied", "inventory")

    def events(self, limit: int, before: int | None = None, action: str | None = None, actor: str | None = None,
               target_id: int | None = None) -> dict[str, Any]:
        events = audit_log.list_events(self._conn, limit, before, action, actor, target_id)
        return {"events": events, "next_before": events[-1]["id"] if len(events) == limit else None}
