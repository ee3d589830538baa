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

DENIED_FLUSH_EVERY = 100
DENIED_CLIENTS_KEPT = 1000
TARGET_TYPES = ("provider", "token", "webhook", "inventory")
AUDIT_ACTIONS = ("provider.create", "provider.update", "provider.delete", "provider.sync_models", "inventory.restore",
                 "inventory.export", "credentials.read", "token.create", "token.revoke", "webhook.create",
                 "webhook.update", "webhook.delete", "auth.denied")


class AuditLog:
    def __init__(self, conn: sqlite3.Connection, keep: int):
        self._conn = conn
        self.keep = keep
        # Refusals counted in memory, by client address: [minute, count not yet written].
        self._denied: dict[str, list] = {}

    def record(self, conn: sqlite3.Connection, actor: Actor, action: str, target_type: str,
               target_id: int | None = None, target_name: str | None = None, fields: list[str] | None = None) -> None:
        """Write one record on `conn`, inside the caller's transaction."""
        newest = audit_log.insert_event(conn, {
            "at": utc_timestamp(), "actor": actor.name, "role": actor.role, "action": action,
            "target_type": target_type, "target_id": target_id, "target_name": target_name,
            "fields": sorted(fields or []), "request_id": actor.request_id, "client": actor.client})
        audit_log.keep_latest(conn, newest, self.keep)

    def denied(self, actor: Actor) -> None:
        """A 401 or 403: the client's first of a minute is a new record; the others of that minute
        are counted in memory and added to it in one write (when the minute ends, every
        DENIED_FLUSH_EVERY refusals, or when the log is read), so a flood costs no write each."""
        client = actor.client or "-"
        minute = utc_timestamp()[:16]
        counted = self._denied.get(client)
        if counted is not None and counted[0] == minute:
            counted[1] += 1
            if counted[1] >= DENIED_FLUSH_EVERY:
                self.flush_denied(client)
            return
        self.flush_denied(client)
        with transaction(self._conn) as conn:
            if not audit_log.count_denied_since(conn, client, minute):  # e.g. one written before a restart
                self.record(conn, actor, "auth.denied", "inventory")
        self._denied[client] = [minute, 0]
        if len(self._denied) > DENIED_CLIENTS_KEPT:
            self.flush_denied()

    def flush_denied(self, client: str | None = None) -> None:
        """Add the refusals counted in memory to their records (one client's, or everyone's: the
        server calls this every second and at shutdown)."""
        clients = [client] if client is not None else list(self._denied)
        pending = [(c, self._denied[c]) for c in clients if c in self._denied and self._denied[c][1]]
        if pending:
            with transaction(self._conn) as conn:
                for name, (minute, count) in pending:
                    audit_log.add_denied(conn, name, minute, count)
        for name in clients:
            if client is None:
                self._denied.pop(name, None)
            elif name in self._denied:
                self._denied[name][1] = 0

    def events(self, limit: int, before: int | None = None, action: str | None = None, actor: str | None = None,
               target_id: int | None = None) -> dict[str, Any]:
        self.flush_denied()
        events = audit_log.list_events(self._conn, limit, before, action, actor, target_id)
        return {"events": events, "next_before": events[-1]["id"] if len(events) == limit else None}
