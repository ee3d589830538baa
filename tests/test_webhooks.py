"""Webhooks: records and their one-time secrets, Standard Webhooks signatures (checked with the
`standardwebhooks` package), subscriptions, the durable outbox (retries on the schedule, delivery
after a SIGKILL), redirects not followed, and receivers that hang slowing only their own deliveries."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import sqlite3
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from support.api import http_json
from support.processes import TEST_SECRET
from support.waiting import wait_until

pytestmark = pytest.mark.gen_test(timeout=60)

_names = itertools.count(1)
RETRY_FACTORS = (1, 6, 24, 120, 720)


async def add_provider(api, fake_provider, **fields) -> dict:
    body = {"name": f"Hooked {next(_names)}", "base_url": fake_provider.url + "/v1",
            "api_key": "sk-webhooks-0123456789abcdef", **fields}
    response = await api.post("/api/providers", json=body)
    assert response.code == 201, response.body
    return response.json()


async def add_webhook(api, receiver, path="/hook", **fields) -> dict:
    response = await api.post("/api/webhooks", json={"url": receiver.url + path, **fields})
    assert response.code == 201, response.body
    return response.json()


def hook_requests(receiver, path="/hook") -> list:
    return [r for r in receiver.requests if r.path == path]


def verified(secret: str, request) -> dict:
    """The payload, checked by an implementation of Standard Webhooks nobody here wrote."""
    return Webhook(secret).verify(request.body, {k: v for k, v in request.headers.items()
                                                 if k.startswith("webhook-")})


async def deliveries(api, webhook_id: int) -> list[dict]:
    response = await api.get(f"/api/webhooks/{webhook_id}/deliveries")
    assert response.code == 200, response.body
    return response.json()["deliveries"]


async def logged_deliveries(api, webhook_id: int, done, timeout: float = 5.0) -> list[dict]:
    """The webhook's delivery log once `done(log)` holds (a failed assertion after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        log = await deliveries(api, webhook_id)
        if done(log):
            return log
        assert time.monotonic() < deadline, f"the delivery log never got there: {log}"
        await asyncio.sleep(0.05)


# -- records ----------------------------------------------------------------------------------------

async def test_create_shows_a_standard_webhooks_secret_once_and_never_again(api, webhook_receiver, runtime):
    response = await api.post("/api/webhooks", json={"url": webhook_receiver.url + "/hook",
                                                     "description": "pager"})
    assert response.code == 201
    assert response.headers["Location"] == f"/api/webhooks/{response.json()['id']}"
    assert response.headers["Cache-Control"] == "no-store"
    created = response.json()
    secret = created.pop("secret")
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[len("whsec_"):])) == 32
    assert created["events"] == ["provider.down", "provider.up", "provider.cert_expiring"]
    assert (created["url"], created["description"], created["is_active"]) == (
        webhook_receiver.url + "/hook", "pager", True)
    assert (await api.get(f"/api/webhooks/{created['id']}")).json() == created
    assert (await api.get("/api/webhooks")).json() == [created]
    database = b"".join(p.read_bytes() for p in runtime.settings.database_path.parent.glob("providers.db*"))
    assert secret.encode() not in database and secret[6:].encode() not in database
    [audit] = [e for e in (await api.get("/api/audit")).json()["events"] if e["action"] == "webhook.create"]
    assert audit["target_id"] == created["id"] and audit["target_name"] == "127.0.0.1"


@pytest.mark.parametrize("body, path", [
    ({"url": "ftp://example.com/hook"}, "/url"),
    ({"url": "https://user:pw@example.com/hook"}, "/url"),
    ({"url": "https://example.com/hook#x"}, "/url"),
    ({}, "/url"),
    ({"url": "https://example.com/hook", "events": ["provider.exploded"]}, "/events/0"),
    ({"url": "https://example.com/hook", "events": []}, "/events"),
    ({"url": "https://example.com/hook", "events": ["provider.up", "provider.up"]}, "/events"),
    ({"url": "https://example.com/hook", "secret": "whsec_mine"}, "/secret"),
    ({"url": "https://example.com/hook", "description": "x" * 501}, "/description"),
])
async def test_a_bad_webhook_body_is_422_and_creates_nothing(api, body, path):
    response = await api.post("/api/webhooks", json=body)
    assert response.code == 422, response.body
    assert path in [e["path"] for e in response.json()["errors"]]
    assert (await api.get("/api/webhooks")).json() == []


async def test_patch_changes_fields_and_an_empty_patch_changes_nothing(api, webhook_receiver):
    webhook = await add_webhook(api, webhook_receiver)
    webhook.pop("secret")
    assert (await api.patch(f"/api/webhooks/{webhook['id']}", json={})).json() == webhook
    changed = (await api.patch(f"/api/webhooks/{webhook['id']}",
                               json={"events": ["provider.down"], "is_active": False, "description": None})).json()
    assert (changed["events"], changed["is_active"]) == (["provider.down"], False)
    assert changed["updated_at"] > webhook["updated_at"]
    assert (await api.patch(f"/api/webhooks/{webhook['id']}", json={"url": "not a url"})).code == 422
    assert (await api.get(f"/api/webhooks/{webhook['id']}")).json() == changed
    [audit] = [e for e in (await api.get("/api/audit")).json()["events"] if e["action"] == "webhook.update"]
    assert audit["fields"] == ["events", "is_active"]


async def test_unknown_webhooks_are_404(api):
    for method, path in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/ping"), ("GET", "/deliveries")):
        kwargs = {"json_body": {}} if method == "PATCH" else {}
        response = await api.request(method, f"/api/webhooks/777{path}", **kwargs)
        assert response.code == 404, (method, path)
        assert "777" in response.json()["detail"]


TOKEN = "webhooks-admin-token-0123456789"


@pytest.mark.env(BACKEND_ADMIN_TOKEN=TOKEN)
async def test_only_admins_manage_webhooks_and_viewers_read_events(api, webhook_receiver):
    viewer = (await api.post("/api/tokens", json={"name": "v", "role": "viewer"})).json()["token"]
    consumer = (await api.post("/api/tokens", json={"name": "c", "role": "consumer"})).json()["token"]
    for token in (viewer, consumer):
        assert (await api.get("/api/webhooks", token=token)).code == 403
        response = await api.post("/api/webhooks", json={"url": webhook_receiver.url + "/hook"}, token=token)
        assert response.code == 403 and "role" in response.json()["detail"]
        assert (await api.get("/api/events", token=token)).code == 200
    assert (await api.get("/api/webhooks", token=None)).code == 401
    assert (await api.get("/api/webhooks")).json() == []


# -- delivery -------------------------------------------------------------------------------------

async def test_an_event_is_delivered_signed_to_every_subscribed_active_webhook(api, fake_provider, webhook_receiver):
    everything = await add_webhook(api, webhook_receiver, "/all")
    ups_only = await add_webhook(api, webhook_receiver, "/ups", events=["provider.up"])
    await add_webhook(api, webhook_receiver, "/downs", events=["provider.down"])
    inactive = await add_webhook(api, webhook_receiver, "/inactive")
    assert (await api.patch(f"/api/webhooks/{inactive['id']}", json={"is_active": False})).code == 200
    provider = await add_provider(api, fake_provider)
    result = (await api.post(f"/api/providers/{provider['id']}/test")).json()
    [event] = (await api.get(f"/api/providers/{provider['id']}/events")).json()["events"]
    await wait_until(lambda: hook_requests(webhook_receiver, "/all") and hook_requests(webhook_receiver, "/ups"),
                     message="both deliveries")
    for webhook, path in ((everything, "/all"), (ups_only, "/ups")):
        [request] = hook_requests(webhook_receiver, path)
        assert request.method == "POST" and request.headers["content-type"] == "application/json"
        payload = verified(webhook["secret"], request)
        assert payload == {"type": "provider.up", "timestamp": event["at"], "data": event}
        assert payload["data"]["result"] == result
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 30
        assert request.headers["webhook-id"].startswith("msg_")
    with pytest.raises(WebhookVerificationError):  # signed with its own secret only
        verified(ups_only["secret"], hook_requests(webhook_receiver, "/all")[0])
    await asyncio.sleep(0.3)
    assert hook_requests(webhook_receiver, "/downs") == [] and hook_requests(webhook_receiver, "/inactive") == []
    [delivery] = await deliveries(api, everything["id"])
    assert (delivery["outcome"], delivery["attempt"], delivery["status_code"]) == ("delivered", 1, 200)
    assert delivery["event_id"] == event["id"] and delivery["type"] == "provider.up"
    assert delivery["message_id"] == hook_requests(webhook_receiver, "/all")[0].headers["webhook-id"]
    assert delivery["next_attempt_at"] is None and delivery["latency_ms"] >= 0 and delivery["error"] is None


@pytest.mark.env(BACKEND_WEBHOOK_RETRY_SECONDS="0.1")
async def test_a_reactivated_webhook_gets_what_was_queued_before_it_was_deactivated(api, fake_provider,
                                                                                     webhook_receiver, runtime):
    webhook = await add_webhook(api, webhook_receiver)
    webhook_receiver.answer("/hook", status=500)
    provider = await add_provider(api, fake_provider)
    await api.post(f"/api/providers/{provider['id']}/test")
    await wait_until(lambda: hook_requests(webhook_receiver), message="the first attempt")
    assert (await api.patch(f"/api/webhooks/{webhook['id']}", json={"is_active": False})).code == 200
    webhook_receiver.answer("/hook", status=204)
    webhook_receiver.requests.clear()
    await asyncio.sleep(0.5)
    assert hook_requests(webhook_receiver) == []
    assert (await api.patch(f"/api/webhooks/{webhook['id']}", json={"is_active": True})).code == 200
    await wait_until(lambda: hook_requests(webhook_receiver), timeout=15, message="the delivery after reactivation")
    verified(webhook["secret"], hook_requests(webhook_receiver)[0])


@pytest.mark.env(BACKEND_WEBHOOK_RETRY_SECONDS="0.01")
async def test_a_failing_receiver_is_retried_on_the_schedule_with_one_message_id_then_failed(
        api, fake_provider, webhook_receiver):
    webhook = await add_webhook(api, webhook_receiver)
    webhook_receiver.answer("/hook", status=500, body={"error": "down"})
    provider = await add_provider(api, fake_provider)
    await api.post(f"/api/providers/{provider['id']}/test")
    base = 0.01
    await wait_until(lambda: len(hook_requests(webhook_receiver)) == 6, timeout=40, message="six attempts")
    await asyncio.sleep(base * 720 * 0.5)  # no seventh attempt comes
    attempts = hook_requests(webhook_receiver)
    assert len(attempts) == 6
    assert len({r.headers["webhook-id"] for r in attempts}) == 1
    for request in attempts:
        verified(webhook["secret"], request)
    gaps = [later.at - earlier.at for earlier, later in zip(attempts, attempts[1:], strict=False)]
    for gap, factor in zip(gaps, RETRY_FACTORS, strict=True):
        assert base * factor * 0.9 <= gap < base * factor + 1.5, gaps
    log = await deliveries(api, webhook["id"])
    assert [d["attempt"] for d in log] == [6, 5, 4, 3, 2, 1]
    assert [d["outcome"] for d in log] == ["failed"] + ["retry"] * 5
    assert all(d["status_code"] == 500 and "500" in d["error"] for d in log)
    assert log[0]["next_attempt_at"] is None and all(d["next_attempt_at"] for d in log[1:])


@pytest.mark.env(BACKEND_WEBHOOK_RETRY_SECONDS="0.05")
async def test_a_receiver_that_fails_then_recovers_gets_the_message_once_more(api, fake_provider, webhook_receiver):
    webhook = await add_webhook(api, webhook_receiver)
    webhook_receiver.answer("/hook", status=503)
    provider = await add_provider(api, fake_provider)
    await api.post(f"/api/providers/{provider['id']}/test")
    await wait_until(lambda: hook_requests(webhook_receiver), message="the first attempt")
    webhook_receiver.answer("/hook", status=200)
    await wait_until(lambda: len(hook_requests(webhook_receiver)) == 2, message="the retry")
    await asyncio.sleep(0.5)
    first, second = hook_requests(webhook_receiver)
    assert len(hook_requests(webhook_receiver)) == 2
    assert first.headers["webhook-id"] == second.headers["webhook-id"] and first.body == second.body
    assert [d["outcome"] for d in await deliveries(api, webhook["id"])] == ["delivered", "retry"]


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(api, fake_provider, webhook_receiver):
    webhook = await add_webhook(api, webhook_receiver)
    webhook_receiver.answer("/hook", status=307, headers={"Location": webhook_receiver.url + "/elsewhere"})
    provider = await add_provider(api, fake_provider)
    await api.post(f"/api/providers/{provider['id']}/test")
    log = await logged_deliveries(api, webhook["id"], lambda log: log)
    assert log[0]["outcome"] == "retry" and log[0]["status_code"] == 307
    assert "redirect" in log[0]["error"] and "not followed" in log[0]["error"]
    assert hook_requests(webhook_receiver, "/elsewhere") == []


@pytest.mark.env(BACKEND_WEBHOOK_TIMEOUT_SECONDS="1")
async def test_a_hanging_receiver_slows_only_its_own_deliveries(api, fake_provider, webhook_receiver):
    hanging = await add_webhook(api, webhook_receiver, "/hangs")
    healthy = await add_webhook(api, webhook_receiver, "/answers")
    webhook_receiver.answer("/hangs", delay=30)
    providers = [await add_provider(api, fake_provider) for _ in range(12)]  # more than a webhook's slots
    started = time.monotonic()
    for provider in providers:
        assert (await api.post(f"/api/providers/{provider['id']}/test")).code == 200
    probing = time.monotonic() - started
    assert probing < 5, probing
    await wait_until(lambda: len(hook_requests(webhook_receiver, "/answers")) == 12, timeout=10,
                     message="every delivery to the healthy receiver")
    ping = time.monotonic()
    assert (await api.get("/ping")).code == 200
    assert time.monotonic() - ping < 1
    log = await logged_deliveries(api, hanging["id"], lambda log: log, timeout=10)
    assert all(d["outcome"] == "retry" and d["status_code"] is None and "timeout" in d["error"] for d in log)
    for request in hook_requests(webhook_receiver, "/answers"):
        verified(healthy["secret"], request)


async def test_ping_sends_a_signed_webhook_ping_now_and_answers_with_the_attempt(api, webhook_receiver):
    webhook = await add_webhook(api, webhook_receiver, events=["provider.down"])
    response = await api.post(f"/api/webhooks/{webhook['id']}/ping")
    assert response.code == 200, response.body
    attempt = response.json()
    [request] = hook_requests(webhook_receiver)
    payload = verified(webhook["secret"], request)
    assert payload["type"] == "webhook.ping" and payload["data"]["webhook_id"] == webhook["id"]
    assert (attempt["type"], attempt["outcome"], attempt["status_code"], attempt["attempt"]) == (
        "webhook.ping", "delivered", 200, 1)
    assert attempt["message_id"] == request.headers["webhook-id"]
    assert (await deliveries(api, webhook["id"])) == [attempt]
    webhook_receiver.answer("/hook", status=410)
    failed = (await api.post(f"/api/webhooks/{webhook['id']}/ping")).json()
    assert (failed["outcome"], failed["status_code"], failed["next_attempt_at"]) == ("failed", 410, None)
    await asyncio.sleep(0.3)
    assert len(hook_requests(webhook_receiver)) == 2  # a ping is not retried


async def test_ping_of_an_unreachable_receiver_says_why(api):
    webhook = (await api.post("/api/webhooks", json={"url": "http://127.0.0.1:9/hook"})).json()
    attempt = (await api.post(f"/api/webhooks/{webhook['id']}/ping")).json()
    assert attempt["outcome"] == "failed" and attempt["status_code"] is None
    assert "connection refused" in attempt["error"]


async def test_deleting_a_webhook_drops_its_pending_messages_and_log(api, fake_provider, webhook_receiver, runtime):
    webhook = await add_webhook(api, webhook_receiver)
    webhook_receiver.answer("/hook", status=500)
    provider = await add_provider(api, fake_provider)
    await api.post(f"/api/providers/{provider['id']}/test")
    await wait_until(lambda: hook_requests(webhook_receiver), message="the first attempt")
    assert (await api.delete(f"/api/webhooks/{webhook['id']}")).code == 204
    assert (await api.get(f"/api/webhooks/{webhook['id']}/deliveries")).code == 404
    for table in ("webhook_messages", "webhook_deliveries"):
        assert runtime.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table


async def test_no_webhook_secret_in_any_log_line(api, fake_provider, webhook_receiver, caplog, access_log):
    caplog.set_level(logging.DEBUG)
    webhook_receiver.answer("/hook", status=500)
    webhook = await add_webhook(api, webhook_receiver)
    provider = await add_provider(api, fake_provider)
    await api.post(f"/api/providers/{provider['id']}/test")
    await api.post(f"/api/webhooks/{webhook['id']}/ping")
    await wait_until(lambda: len(hook_requests(webhook_receiver)) >= 2, message="deliveries")
    await api.patch(f"/api/webhooks/{webhook['id']}", json={"url": webhook_receiver.url + "/hook2"})
    logged = caplog.text + "\n".join(access_log())
    assert "webhook" in caplog.text  # the failed delivery is logged, without the secret
    secret = webhook["secret"]
    for fragment in (secret, secret[6:], secret[6:20], secret[-12:]):
        assert fragment not in logged


@pytest.mark.env(BACKEND_API_KEY_SECRET=f"new-secret-for-webhooks,{TEST_SECRET}")
async def test_key_rotation_re_encrypts_webhook_secrets_which_still_sign(env, data_dir):
    from registry.access import CLI
    from registry.config import load_settings
    from registry.keyring import Keyring
    from registry.webhooks import WebhookService
    from server import build_service, open_runtime

    # A webhook stored under the old secret only, as an older deployment left it.
    old = open_runtime(load_settings({**env, "BACKEND_API_KEY_SECRET": TEST_SECRET}))
    service = WebhookService(old.conn, old.inventory.keyring, old.audit, delivery=None)
    _, secret = service.create({"url": "http://127.0.0.1:9/hook"}, CLI)
    old.conn.close()
    conn = sqlite3.connect(data_dir / "providers.db")
    before = conn.execute("SELECT secret_ciphertext FROM webhooks").fetchone()[0]
    conn.close()
    runtime = open_runtime(load_settings(env))
    try:
        build_service(runtime).close()  # start-up housekeeping rotates
        after = runtime.conn.execute("SELECT secret_ciphertext FROM webhooks").fetchone()[0]
        assert after != before
        assert Keyring(["new-secret-for-webhooks"]).decrypt(after) == secret
    finally:
        runtime.conn.close()


# -- durability -------------------------------------------------------------------------------------

def test_a_message_in_flight_at_a_sigkill_is_delivered_after_the_restart_with_the_same_id(
        run_server, threaded_fake_provider, tmp_path):
    receiver = threaded_fake_provider
    env = {"BACKEND_API_KEY_SECRET": TEST_SECRET}
    server = run_server(env)
    status, webhook = http_json("POST", server.url + "/api/webhooks", {"url": receiver.url + "/hook"})
    assert status == 201
    status, provider = http_json("POST", server.url + "/api/providers",
                                 {"name": "Durable", "base_url": receiver.url + "/v1"})
    receiver.answer("/hook", delay=60)  # the first attempt hangs until the kill
    assert http_json("POST", server.url + f"/api/providers/{provider['id']}/test")[0] == 200
    deadline = time.monotonic() + 10
    while not hook_requests(receiver) and time.monotonic() < deadline:
        time.sleep(0.05)
    [hung] = hook_requests(receiver)
    server.process.kill()
    server.process.wait(10)
    receiver.answer("/hook", status=200)
    restarted = run_server(env)
    deadline = time.monotonic() + 15
    while len(hook_requests(receiver)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    first, again = hook_requests(receiver)
    assert again.headers["webhook-id"] == hung.headers["webhook-id"] and again.body == hung.body
    payload = verified(webhook["secret"], again)
    assert payload["type"] == "provider.up" and payload["data"]["provider_id"] == provider["id"]
    deadline = time.monotonic() + 5  # the attempt's record follows the answer
    while not (log := http_json("GET", restarted.url + f"/api/webhooks/{webhook['id']}/deliveries")[1])[
            "deliveries"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(d["outcome"], d["attempt"]) for d in log["deliveries"]] == [("delivered", 1)]
    time.sleep(0.5)
    assert len(hook_requests(receiver)) == 2
    assert json.loads(again.body)["data"]["result"]["status"] == "online"


# -- found by an attack on the webhooks ----------------------------------------------------------------

@pytest.mark.env(BACKEND_WEBHOOK_TIMEOUT_SECONDS="1")
async def test_hanging_receivers_hold_one_slot_each_so_a_healthy_webhook_is_not_held_up(api, fake_provider,
                                                                                       webhook_receiver):
    hanging = []
    for i in range(10):
        webhook_receiver.answer(f"/hangs-{i}", delay=30)
        hanging.append(await add_webhook(api, webhook_receiver, f"/hangs-{i}"))
    healthy = await add_webhook(api, webhook_receiver, "/answers")
    first = await add_provider(api, fake_provider)
    await api.post(f"/api/providers/{first['id']}/test")
    # Every hanging receiver times out once (its first messages went out at full concurrency) ...
    await wait_until(lambda: len(hook_requests(webhook_receiver, "/answers")) == 1, message="the first delivery")
    for webhook in hanging:
        await logged_deliveries(api, webhook["id"], lambda log: log, timeout=10)
    # ... and from then on holds at most one transfer slot: 20 more events reach the healthy receiver at once.
    # (Were each to hold 8, 10 x 8 hanging attempts would take more than the 64 slots, and the healthy
    # receiver's would wait for the hanging ones to time out, a second later.)
    for _ in range(20):
        await add_provider(api, fake_provider)
    assert (await api.post("/api/providers/test")).code == 200
    await wait_until(lambda: len(hook_requests(webhook_receiver, "/answers")) == 21, timeout=0.8,
                     message="the healthy receiver's deliveries, before any hanging attempt times out")
    ping = time.monotonic()
    assert (await api.post(f"/api/webhooks/{healthy['id']}/ping")).json()["outcome"] == "delivered"
    assert time.monotonic() - ping < 0.8


@pytest.mark.parametrize("value", ["1e12", "86401", "0", "-1"])
def test_a_retry_base_beyond_a_day_or_not_positive_is_refused(env, value):
    from registry.config import ConfigError, load_settings
    with pytest.raises(ConfigError, match="BACKEND_WEBHOOK_RETRY_SECONDS"):
        load_settings({**env, "BACKEND_WEBHOOK_RETRY_SECONDS": value})


async def test_a_receiver_answering_a_huge_body_is_cut_short(api, webhook_receiver):
    webhook = await add_webhook(api, webhook_receiver)
    webhook_receiver.answer("/hook", body=b"x" * (2 * 1024 * 1024))
    started = time.monotonic()
    attempt = (await api.post(f"/api/webhooks/{webhook['id']}/ping")).json()
    assert attempt["outcome"] == "failed" and "larger than 64 KiB" in attempt["error"]
    assert time.monotonic() - started < 2


async def test_a_description_with_a_control_character_is_422(api, webhook_receiver):
    response = await api.post("/api/webhooks", json={"url": webhook_receiver.url + "/hook", "description": "a\x00b"})
    assert response.code == 422 and [e["path"] for e in response.json()["errors"]] == ["/description"]


async def test_a_webhook_pointed_at_the_registry_itself_is_refused_and_does_not_recurse(api, http_server, base_url):
    webhook = (await api.post("/api/webhooks", json={"url": base_url + "/api/webhooks/1/ping"})).json()
    assert webhook["id"] == 1
    started = time.monotonic()
    attempt = (await api.post(f"/api/webhooks/{webhook['id']}/ping")).json()
    assert (attempt["outcome"], attempt["status_code"]) == ("failed", 403)
    assert time.monotonic() - started < 2
    assert len(await deliveries(api, webhook["id"])) == 1  # one ping, not a chain of them
