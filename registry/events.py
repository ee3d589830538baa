"""Events (a provider went down or up, its certificate nears expiry) and the webhook outbox they
feed: raising an event writes it and queues one message per subscribed active webhook, on the
caller's connection inside the caller's transaction, so an event exists only with its messages.
Delivery (`webhook_delivery.py`) is told after that transaction, and works through the outbox."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from registry.errors import store_errors_translated
from store import events as event_rows
from store import webhooks as webhook_rows

# The event types webhooks subscribe to, with what each means (the API documents this table).
EVENT_TYPES: dict[str, str] = {
    "provider.down": "a provider's health became down",
    "provider.up": "a provider's health became up",
    "provider.cert_expiring": "a provider's TLS certificate expires soon",
}
PING = "webhook.ping"  # sent to one webhook on request, whatever it subscribes to


def message_id() -> str:
    """A Standard Webhooks message id: one per message, the same on every retry of it (those of
    events get theirs, of the same form, from `store.webhooks.queue_events`)."""
    return "msg_" + secrets.token_hex(16)


def message_body(event_type: str, timestamp: str, data: dict[str, Any]) -> str:
    """The JSON body a webhook receives (and whose bytes are signed); those of events are built
    the same way by `store.webhooks.queue_events`."""
    return json.dumps({"type": event_type, "timestamp": timestamp, "data": data}, ensure_ascii=False,
                      separators=(",", ":"))


class EventLog:
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        # Called (without arguments) after a message is queued, inside the transaction: it must
        # only schedule work for later (delivery finds the messages once they are committed).
        self.on_queued: Callable[[], None] | None = None

    def raise_events(self, conn: sqlite3.Connection, events: list[dict[str, Any]]) -> None:
        """Write `events` (their fields but ids) and queue each for every active webhook subscribed
        to its type."""
        if not events:
            return
        after = event_rows.insert_events(conn, events)
        webhooks = webhook_rows.list_webhooks(conn, active_only=True)
        for webhook in webhooks:
            webhook_rows.queue_events(conn, webhook.id, after, webhook.events, time.time())
        if webhooks and self.on_queued is not None:
            self.on_queued()

    def provider_events(self, provider_id: int, limit: int) -> list[dict[str, Any]]:
        """The provider's latest events, newest first."""
        with store_errors_translated():
            return event_rows.provider_events(self._conn, provider_id, limit)

    def feed(self, after: int, limit: int, provider_ids: frozenset[int] | None = None) -> dict[str, Any]:
        """Events after the id `after`, oldest first; `next_after` is where the next poll starts."""
        events = event_rows.events_after(self._conn, after, limit, provider_ids)
        return {"events": events, "next_after": events[-1]["id"] if events else after}
