"""SQL for the `webhooks` table, the outbox of messages to deliver (`webhook_messages`) and the log
of delivery attempts (`webhook_deliveries`). Callers own the transaction.

Rows become `Webhook` and `Message` objects here only. The only dynamic SQL is column names taken
from the `_WEBHOOK_COLUMNS` whitelist.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable

from store.events import EVENT_JSON

DELIVERIES_KEPT_PER_WEBHOOK = 1000
FAILED_MESSAGES_KEPT_PER_WEBHOOK = 1000  # delivered ones leave the outbox at once


class WebhookNotFound(Exception):
    def __init__(self, webhook_id: int):
        super().__init__(f"webhook {webhook_id} does not exist")
        self.webhook_id = webhook_id


@dataclass(frozen=True)
class Webhook:
    id: int
    url: str
    events: list[str] | None  # None: every event type
    description: str | None
    is_active: bool
    secret_ciphertext: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class Message:
    """A message waiting in the outbox, with what delivering it needs from its webhook."""
    id: int
    webhook_id: int
    message_id: str
    event_id: int | None
    type: str
    body: str
    attempts: int
    url: str
    secret_ciphertext: str


_SELECT_WEBHOOK = ("SELECT id, url, events, description, is_active, secret_ciphertext, created_at, updated_at "
                   "FROM webhooks")
# Column name -> how its Python value is stored. Also the whitelist for dynamic UPDATE statements.
_WEBHOOK_COLUMNS = {
    "url": lambda v: v,
    "events": lambda v: None if v is None else json.dumps(v),
    "description": lambda v: v,
    "is_active": lambda v: int(bool(v)),
    "secret_ciphertext": lambda v: v,
    "created_at": lambda v: v,
    "updated_at": lambda v: v,
}


def _webhook_from_row(row: tuple) -> Webhook:
    (id_, url, events, description, is_active, ciphertext, created_at, updated_at) = row
    return Webhook(id=id_, url=url, events=None if events is None else json.loads(events), description=description,
                   is_active=bool(is_active), secret_ciphertext=ciphertext, created_at=created_at,
                   updated_at=updated_at)


def insert_webhook(conn: sqlite3.Connection, values: dict[str, Any]) -> int:
    columns = [c for c in _WEBHOOK_COLUMNS if c in values]  # whitelisted names only
    return conn.execute(f"INSERT INTO webhooks ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                        [_WEBHOOK_COLUMNS[c](values[c]) for c in columns]).lastrowid


def get_webhook(conn: sqlite3.Connection, webhook_id: int) -> Webhook:
    row = conn.execute(_SELECT_WEBHOOK + " WHERE id = ?", (webhook_id,)).fetchone()
    if row is None:
        raise WebhookNotFound(webhook_id)
    return _webhook_from_row(row)


def list_webhooks(conn: sqlite3.Connection, active_only: bool = False) -> list[Webhook]:
    where = " WHERE is_active = 1" if active_only else ""
    return [_webhook_from_row(r) for r in conn.execute(_SELECT_WEBHOOK + where + " ORDER BY id")]


def update_webhook(conn: sqlite3.Connection, webhook_id: int, values: dict[str, Any]) -> None:
    columns = [c for c in _WEBHOOK_COLUMNS if c in values]  # whitelisted names only
    if not columns:
        get_webhook(conn, webhook_id)
        return
    cursor = conn.execute(f"UPDATE webhooks SET {', '.join(c + ' = ?' for c in columns)} WHERE id = ?",
                          [_WEBHOOK_COLUMNS[c](values[c]) for c in columns] + [webhook_id])
    if cursor.rowcount == 0:
        raise WebhookNotFound(webhook_id)


def delete_webhook(conn: sqlite3.Connection, webhook_id: int) -> None:
    """Its messages and delivery log go with it."""
    if conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount == 0:
        raise WebhookNotFound(webhook_id)


def set_secret_ciphertexts(conn: sqlite3.Connection, ciphertexts: Iterable[tuple[int, str]]) -> None:
    conn.executemany("UPDATE webhooks SET secret_ciphertext = ? WHERE id = ?", [(c, i) for i, c in ciphertexts])


# -- the outbox ------------------------------------------------------------------------------------

def queue_events(conn: sqlite3.Connection, webhook_id: int, after_event_id: int, types: list[str] | None,
                 due_at: float) -> None:
    """Queue for the webhook a message for every event after `after_event_id` (of `types`; None =
    all), with a fresh message id and its body, `{"type", "timestamp", "data": the event}`, as it
    will be sent and signed: one statement for any number of events."""
    conn.execute(
        "INSERT INTO webhook_messages (webhook_id, message_id, event_id, type, body, next_attempt_at, created_at) "
        "SELECT ?, 'msg_' || lower(hex(randomblob(16))), id, type, "
        f"json_object('type', type, 'timestamp', at, 'data', {EVENT_JSON}), ?, at FROM events "
        "WHERE id > ? AND (? IS NULL OR type IN (SELECT value FROM json_each(?))) ORDER BY id",
        (webhook_id, due_at, after_event_id, None if types is None else 1, json.dumps(types or [])))


_SELECT_MESSAGE = ("SELECT m.id, m.webhook_id, m.message_id, m.event_id, m.type, m.body, m.attempts, w.url, "
                   "w.secret_ciphertext FROM webhook_messages m JOIN webhooks w ON w.id = m.webhook_id")


def due_messages(conn: sqlite3.Connection, webhook_id: int, now: float, limit: int,
                 skip: Iterable[int] = ()) -> list[Message]:
    """The webhook's pending messages due by `now` (oldest due first), but those in `skip`."""
    rows = conn.execute(_SELECT_MESSAGE + " WHERE m.webhook_id = ? AND m.state = 'pending' AND m.next_attempt_at <= ? "
                        "AND m.id NOT IN (SELECT value FROM json_each(?)) ORDER BY m.next_attempt_at, m.id LIMIT ?",
                        (webhook_id, now, json.dumps(list(skip)), limit))
    return [Message(*r) for r in rows]


def next_due_at(conn: sqlite3.Connection, webhook_ids: Iterable[int], skip: Iterable[int] = ()) -> float | None:
    """When the earliest pending message of these webhooks (but those in `skip`) falls due."""
    return conn.execute("SELECT min(next_attempt_at) FROM webhook_messages WHERE state = 'pending' AND webhook_id IN "
                        "(SELECT value FROM json_each(?)) AND id NOT IN (SELECT value FROM json_each(?))",
                        (json.dumps(list(webhook_ids)), json.dumps(list(skip)))).fetchone()[0]


def record_attempt(conn: sqlite3.Connection, message: Message | None, delivery: dict[str, Any],
                   next_attempt_at: float | None) -> int | None:
    """Log one delivery attempt and, for an outbox message, move it on: delivered (it leaves the
    outbox), failed (kept, the latest FAILED_MESSAGES_KEPT_PER_WEBHOOK), or pending until
    `next_attempt_at`. A message whose webhook was deleted meanwhile is gone: nothing
    is logged then (None); otherwise the attempt's id."""
    if message is not None:
        if delivery["outcome"] == "delivered":  # its record in the delivery log is what remains of it
            cursor = conn.execute("DELETE FROM webhook_messages WHERE id = ?", (message.id,))
        else:
            state = "failed" if delivery["outcome"] == "failed" else "pending"
            cursor = conn.execute("UPDATE webhook_messages SET state = ?, attempts = ?, next_attempt_at = ? "
                                  "WHERE id = ?", (state, delivery["attempt"], next_attempt_at, message.id))
        if cursor.rowcount == 0:
            return None
        if delivery["outcome"] == "failed":
            conn.execute("DELETE FROM webhook_messages WHERE webhook_id = ? AND state = 'failed' AND id <= ("
                         "SELECT id FROM webhook_messages WHERE webhook_id = ? AND state = 'failed' "
                         "ORDER BY id DESC LIMIT 1 OFFSET ?)",
                         (delivery["webhook_id"], delivery["webhook_id"], FAILED_MESSAGES_KEPT_PER_WEBHOOK))
    elif conn.execute("SELECT 1 FROM webhooks WHERE id = ?", (delivery["webhook_id"],)).fetchone() is None:
        return None
    columns = _DELIVERY_COLUMNS[1:]  # fixed names
    delivery_id = conn.execute(f"INSERT INTO webhook_deliveries ({', '.join(columns)}) "
                               f"VALUES ({', '.join('?' * len(columns))})",
                               tuple(delivery[c] for c in columns)).lastrowid
    conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ? AND id <= ("
                 "SELECT id FROM webhook_deliveries WHERE webhook_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                 (delivery["webhook_id"], delivery["webhook_id"], DELIVERIES_KEPT_PER_WEBHOOK))
    return delivery_id


_DELIVERY_COLUMNS = ("id", "webhook_id", "message_id", "event_id", "type", "attempt", "at", "status_code",
                     "latency_ms", "error", "outcome", "next_attempt_at")


def list_deliveries(conn: sqlite3.Connection, webhook_id: int, limit: int) -> list[dict[str, Any]]:
    """The webhook's latest delivery attempts, newest first."""
    get_webhook(conn, webhook_id)
    rows = conn.execute(f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM webhook_deliveries WHERE webhook_id = ? "
                        "ORDER BY id DESC LIMIT ?", (webhook_id, limit))
    return [dict(zip(_DELIVERY_COLUMNS, r, strict=True)) for r in rows]
