"""Webhook delivery: works through the outbox (`webhook_messages`) on the event loop, signing each
attempt per the Standard Webhooks specification, and records every attempt.

Contract:
- at-least-once: a message leaves the outbox only once an attempt is recorded as delivered (a 2xx)
  or as the last failure; one pending at a crash is sent again after the restart, with the same
  `webhook-id` (receivers deduplicate on it);
- retries after `retry_base` × RETRY_FACTORS seconds, then the message is failed;
- it never blocks requests or probes: it has its own outbound client (its own transfer slots), at
  most PER_WEBHOOK_IN_FLIGHT attempts run per webhook, and only one while the webhook's latest
  attempt failed (so a receiver that hangs holds one slot, and other webhooks keep theirs), and
  the attempts' records are written in groups, one commit per RECORD_WINDOW_SECONDS at most (a
  crash inside the window sends those messages again: at-least-once still holds);
- messages of one webhook may arrive out of order (several are in flight at once): receivers
  order events by their `id`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import sqlite3
import time
from contextlib import contextmanager
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Iterator

from outbound.answers import RequestNotSent, TransportFailure
from outbound.client import OutboundClient
from registry.group_commit import Change, GroupCommit
from registry.keyring import Keyring, UndecryptableKey
from registry.timestamps import utc_timestamp
from store import webhooks as webhook_rows
from store.database import transaction

log = logging.getLogger("provider_registry.webhooks")

SECRET_PREFIX = "whsec_"
RETRY_FACTORS = (1, 6, 24, 120, 720)  # the waits before retries 1 to 5, in units of retry_base
PER_WEBHOOK_IN_FLIGHT = 8
TRANSFER_SLOTS = 64
MAX_ANSWER_BYTES = 64 * 1024  # a receiver's answer is not needed beyond its status
IDLE_LOOK_SECONDS = 5.0  # how often the outbox is looked at when nothing woke delivery up
RECORD_WINDOW_SECONDS = 0.1
LOOK_EVERY_SECONDS = 0.02  # at most one look at the outbox per this long, however many attempts end


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: HMAC-SHA256 over "{id}.{timestamp}.{body}" keyed with the
    secret's decoded bytes, base64, version v1."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt got: a status code (any), or an error saying why there was none."""
    status_code: int | None
    latency_ms: float | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookDelivery:
    def __init__(self, conn: sqlite3.Connection, keyring: Keyring, client: OutboundClient, retry_base: float):
        self._conn = conn
        self._keyring = keyring
        self.client = client
        self.retry_base = retry_base
        self._records = GroupCommit(self._transaction, RECORD_WINDOW_SECONDS)
        self._in_flight: dict[int, set[int]] = {}  # webhook id -> outbox ids being attempted
        self._settling: set[int] = set()  # outbox ids attempted, whose record is not committed yet
        self._failing: set[int] = set()  # webhooks whose latest attempt failed: one attempt at a time
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.Task | None = None
        # Told the outcome ("delivered", "retry" or "failed") of every attempt at an outbox message: metrics.
        self.observe_delivery: Callable[[str], None] | None = None

    # -- sending -------------------------------------------------------------------------------

    async def attempt(self, url: str, secret_ciphertext: str, message_id: str, body: bytes) -> Attempt:
        """POST `body` to `url`, signed; never raises for what the network or the receiver does."""
        try:
            secret = self._keyring.decrypt(secret_ciphertext)
        except UndecryptableKey:
            return Attempt(None, None, "the webhook secret cannot be decrypted with the configured secrets")
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", "webhook-id": message_id,
                   "webhook-timestamp": str(timestamp), "webhook-signature": signature(secret, message_id,
                                                                                       timestamp, body)}
        started = time.monotonic()
        try:
            answer = await self.client.post(url, headers, body)
        except RequestNotSent as exc:
            return Attempt(None, None, str(exc))
        except TransportFailure as failure:
            return Attempt(None, _ms_since(started), failure.detail)
        latency = _ms_since(started)
        if 200 <= answer.code < 300:
            return Attempt(answer.code, latency, None)
        if 300 <= answer.code < 400:
            return Attempt(answer.code, latency, f"HTTP {answer.code} redirect (not followed)")
        return Attempt(answer.code, latency, f"HTTP {answer.code} {answer.reason}".strip())

    # -- the outbox ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        """Look at the outbox soon (a message was queued, a webhook came back on)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop taking messages; attempts in flight are abandoned (sent again after a restart)."""
        tasks = [t for t in (self._loop, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                wait = self._start_due_attempts()
            except Exception:
                log.exception("webhook delivery could not read the outbox")
                wait = IDLE_LOOK_SECONDS
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(LOOK_EVERY_SECONDS)

    def _start_due_attempts(self) -> float:
        """Start an attempt for every due message a webhook has room for; returns how long to wait
        before looking again."""
        now = time.time()
        with_room = []
        for webhook in webhook_rows.list_webhooks(self._conn, active_only=True):
            in_flight = self._in_flight.setdefault(webhook.id, set())
            limit = 1 if webhook.id in self._failing else PER_WEBHOOK_IN_FLIGHT
            room = limit - len(in_flight)
            if room <= 0:
                continue
            due = webhook_rows.due_messages(self._conn, webhook.id, now, room, skip=in_flight | self._settling)
            for message in due:
                in_flight.add(message.id)
                task = asyncio.get_running_loop().create_task(self._deliver(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if len(in_flight) < limit:
                with_room.append(webhook.id)
        skip = [i for ids in self._in_flight.values() for i in ids] + list(self._settling)
        next_due = webhook_rows.next_due_at(self._conn, with_room, skip) if with_room else None
        if next_due is None:
            return IDLE_LOOK_SECONDS
        return min(IDLE_LOOK_SECONDS, max(0.0, next_due - time.time()))

    async def _deliver(self, message: webhook_rows.Message) -> None:
        try:
            attempt_number = message.attempts + 1
            at = utc_timestamp()
            attempt = await self.attempt(message.url, message.secret_ciphertext, message.message_id,
                                         message.body.encode("utf-8"))
            if attempt.delivered:
                outcome, next_at = "delivered", None
            elif attempt_number <= len(RETRY_FACTORS):
                outcome, next_at = "retry", time.time() + self.retry_base * RETRY_FACTORS[attempt_number - 1]
            else:
                outcome, next_at = "failed", None
            if outcome == "delivered":
                self._failing.discard(message.webhook_id)
            else:
                self._failing.add(message.webhook_id)
                log.warning("webhook %d: delivery of %s (attempt %d) %s: %s", message.webhook_id, message.message_id,
                            attempt_number, "will be retried" if next_at else "failed for good", attempt.error
                            or f"HTTP {attempt.status_code}")
            if self.observe_delivery is not None:
                self.observe_delivery(outcome)
            # The slot is free for the next message now; this one is skipped until its record is committed.
            self._settling.add(message.id)
            self._in_flight.get(message.webhook_id, set()).discard(message.id)
            self.wake()
            await self.record(message, _delivery(message.webhook_id, message.message_id, message.event_id,
                                                 message.type, attempt_number, at, attempt, outcome, next_at), next_at)
        except Exception:
            log.exception("webhook %d: delivery of %s failed unexpectedly", message.webhook_id, message.message_id)
            # Not at once again (the same failure would repeat in a tight loop): after the retry base.
            self._settling.add(message.id)
            asyncio.get_running_loop().call_later(self.retry_base, self._settled, message.id)
        else:
            self._settled(message.id)
        finally:
            self._in_flight.get(message.webhook_id, set()).discard(message.id)
            self.wake()

    def _settled(self, outbox_id: int) -> None:
        self._settling.discard(outbox_id)
        self.wake()

    async def record(self, message: webhook_rows.Message | None, delivery: dict[str, Any],
                     next_attempt_at: float | None) -> int | None:
        """Write one attempt's record (and move its message on); with others ending meanwhile, in one commit."""
        return await self._records.submit(
            lambda change: webhook_rows.record_attempt(change.conn, message, delivery, next_attempt_at))

    @contextmanager
    def _transaction(self) -> Iterator[Change]:
        with transaction(self._conn) as conn:
            yield Change(conn)


def _delivery(webhook_id: int, message_id: str, event_id: int | None, type_: str, attempt_number: int, at: str,
              attempt: Attempt, outcome: str, next_attempt_at: float | None) -> dict[str, Any]:
    """A delivery record as the API shows it (without its id)."""
    return {"webhook_id": webhook_id, "message_id": message_id, "event_id": event_id, "type": type_,
            "attempt": attempt_number, "at": at, "status_code": attempt.status_code,
            "latency_ms": attempt.latency_ms, "error": attempt.error, "outcome": outcome,
            "next_attempt_at": None if next_attempt_at is None else utc_timestamp(next_attempt_at)}


def delivery_record(webhook_id: int, message_id: str, type_: str, at: str, attempt: Attempt) -> dict[str, Any]:
    """The record of a one-off attempt (a ping): delivered or failed, never retried."""
    return _delivery(webhook_id, message_id, None, type_, 1, at, attempt,
                     "delivered" if attempt.delivered else "failed", None)


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 2)
