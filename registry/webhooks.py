"""Webhooks: where events are sent. Each has a URL, the event types it wants (all by default), and
a secret (`whsec_` + base64 of 32 random bytes) shown once at creation and stored encrypted like
API keys; changes are on the audit log. Delivery itself is `webhook_delivery.py`."""

from __future__ import annotations

import base64
import secrets
import sqlite3
from typing import Any
from urllib.parse import urlsplit

from registry.access import Actor
from registry.audit import AuditLog
from registry.errors import store_errors_translated
from registry.events import EVENT_TYPES, PING, message_body, message_id
from registry.keyring import Keyring
from registry.timestamps import utc_timestamp
from registry.webhook_delivery import SECRET_PREFIX, WebhookDelivery, delivery_record
from store import webhooks as webhook_rows
from store.database import transaction

MAX_DELIVERIES_SHOWN = 1000


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def public_record(webhook: webhook_rows.Webhook) -> dict[str, Any]:
    """A webhook as the API shows it: never its secret."""
    return {"id": webhook.id, "url": webhook.url,
            "events": list(EVENT_TYPES) if webhook.events is None else webhook.events,
            "description": webhook.description, "is_active": webhook.is_active,
            "created_at": webhook.created_at, "updated_at": webhook.updated_at}


class WebhookService:
    def __init__(self, conn: sqlite3.Connection, keyring: Keyring, audit: AuditLog, delivery: WebhookDelivery):
        self._conn = conn
        self._keyring = keyring
        self._audit = audit
        self.delivery = delivery

    def list(self) -> list[dict[str, Any]]:
        return [public_record(w) for w in webhook_rows.list_webhooks(self._conn)]

    def get(self, webhook_id: int) -> dict[str, Any]:
        with store_errors_translated():
            return public_record(webhook_rows.get_webhook(self._conn, webhook_id))

    def create(self, body: dict[str, Any], actor: Actor) -> tuple[dict[str, Any], str]:
        """Create from a validated body; returns the record and the secret (shown this once)."""
        secret = new_secret()
        now = utc_timestamp()
        values = {"url": body["url"], "events": _subscription(body.get("events")),
                  "description": body.get("description"), "is_active": True,
                  "secret_ciphertext": self._keyring.encrypt(secret), "created_at": now, "updated_at": now}
        with transaction(self._conn) as conn:
            webhook_id = webhook_rows.insert_webhook(conn, values)
            self._audit.record(conn, actor, "webhook.create", "webhook", webhook_id, _audit_name(body["url"]),
                               [name for name in body if name != "url"] + ["url"])
        return self.get(webhook_id), secret

    def update(self, webhook_id: int, changes: dict[str, Any], actor: Actor) -> dict[str, Any]:
        """Apply a validated PATCH body; fields equal to what is stored are not changes."""
        wanted = {**changes}
        if "events" in wanted:
            wanted["events"] = _subscription(wanted["events"])
        with transaction(self._conn) as conn, store_errors_translated():
            current = webhook_rows.get_webhook(conn, webhook_id)
            values = {name: value for name, value in wanted.items() if getattr(current, name) != value}
            if values:
                webhook_rows.update_webhook(conn, webhook_id, {**values, "updated_at": utc_timestamp()})
                self._audit.record(conn, actor, "webhook.update", "webhook", webhook_id,
                                   _audit_name(values.get("url", current.url)), list(values))
        if values.get("is_active"):
            self.delivery.wake()  # messages queued before it was switched off are sent now
        return self.get(webhook_id)

    def delete(self, webhook_id: int, actor: Actor) -> None:
        """Its pending messages and its delivery log go with it."""
        with transaction(self._conn) as conn, store_errors_translated():
            url = webhook_rows.get_webhook(conn, webhook_id).url
            webhook_rows.delete_webhook(conn, webhook_id)
            self._audit.record(conn, actor, "webhook.delete", "webhook", webhook_id, _audit_name(url))

    def deliveries(self, webhook_id: int, limit: int) -> dict[str, Any]:
        """The webhook's latest delivery attempts, newest first."""
        with store_errors_translated():
            return {"deliveries": webhook_rows.list_deliveries(self._conn, webhook_id,
                                                               min(limit, MAX_DELIVERIES_SHOWN))}

    async def ping(self, webhook_id: int) -> dict[str, Any]:
        """Send a `webhook.ping` now (active or not, whatever it subscribes to) and answer with the
        attempt, which is logged with the webhook's deliveries. A ping is not retried."""
        with store_errors_translated():
            webhook = webhook_rows.get_webhook(self._conn, webhook_id)
        at = utc_timestamp()
        ping_id = message_id()
        body = message_body(PING, at, {"webhook_id": webhook.id, "url": webhook.url})
        attempt = await self.delivery.attempt(webhook.url, webhook.secret_ciphertext, ping_id, body.encode("utf-8"))
        record = delivery_record(webhook.id, ping_id, PING, at, attempt)
        delivery_id = await self.delivery.record(None, record, None)
        return {"id": delivery_id, **record}

    def rotate_secrets(self) -> int:
        """Re-encrypt under the current secret every webhook secret only an old one reads (key
        rotation at start-up); returns how many."""
        rotated = []
        for webhook in webhook_rows.list_webhooks(self._conn):
            if not self._keyring.is_current(webhook.secret_ciphertext) and \
                    self._keyring.can_decrypt(webhook.secret_ciphertext):
                rotated.append((webhook.id, self._keyring.rotate(webhook.secret_ciphertext)))
        if rotated:
            with transaction(self._conn) as conn:
                webhook_rows.set_secret_ciphertexts(conn, rotated)
        return len(rotated)


def _subscription(events: list[str] | None) -> list[str] | None:
    """What is stored: None for every type (so types added later are sent too), else in table order."""
    if events is None or set(events) == set(EVENT_TYPES):
        return None
    return [t for t in EVENT_TYPES if t in events]


def _audit_name(url: str) -> str:
    """A webhook's name on the audit log: its host only, since some receivers' URLs hold a token."""
    return urlsplit(url).hostname or "?"
