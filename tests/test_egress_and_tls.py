"""The egress policy on every outbound request (decided on the address connected to, after DNS), and
certificates: `tls` on https results, `provider.cert_expiring` once per certificate, and the extra
certificate authorities of BACKEND_PROBE_CA_BUNDLE. Nothing is ever sent beyond loopback: blocked
classes other than loopback are covered by the unit tests of the address rules."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timezone

import pytest

from outbound.egress import refusal
from registry.config import ConfigError, load_settings
from support.certificates import make_ca
from support.fake_provider import serve_fake_provider

pytestmark = pytest.mark.gen_test(timeout=30)
_names = itertools.count(1)
NO_TIMINGS = {"dns_ms": None, "connect_ms": None, "tls_ms": None, "first_byte_ms": None, "total_ms": None}


# -- the address rules --------------------------------------------------------------------------------

@pytest.mark.parametrize("address, kind", [
    ("169.254.169.254", "a cloud metadata address"), ("fd00:ec2::254", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"), ("::ffff:169.254.169.254", "a cloud metadata address"),
    ("::ffff:a9fe:a9fe", "a cloud metadata address"), ("64:ff9b::169.254.169.254", "a cloud metadata address"),
    ("169.254.1.1", "a link-local address"), ("fe80::1", "a link-local address"),
    ("fe80::1%eth0", "a link-local address"), ("::ffff:169.254.7.7", "a link-local address"),
])
def test_metadata_and_link_local_addresses_are_blocked_by_default_and_by_public_only(address, kind):
    for mode in ("no-metadata", "public-only"):
        assert refusal(mode, address) == f"blocked by the egress policy ({mode}): {address} is {kind}"
    assert refusal("any", address) is None


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "a loopback address"), ("127.8.9.10", "a loopback address"), ("::1", "a loopback address"),
    ("::ffff:127.0.0.1", "a loopback address"), ("10.0.0.1", "a private address"), ("172.16.5.4", "a private address"),
    ("172.31.255.255", "a private address"), ("192.168.1.1", "a private address"), ("fc00::1", "a private address"),
    ("fd12:3456::1", "a private address"), ("100.64.0.1", "a shared address (carrier-grade NAT)"),
    ("100.127.255.254", "a shared address (carrier-grade NAT)"), ("0.0.0.0", "the unspecified address"),
    ("::", "the unspecified address"), ("224.0.0.1", "a multicast address"), ("ff02::1", "a multicast address"),
    ("255.255.255.255", "the broadcast address"), ("192.0.2.10", "a documentation address"),
    ("198.51.100.7", "a documentation address"), ("203.0.113.9", "a documentation address"),
    ("2001:db8::1", "a documentation address"), ("240.0.0.1", "a reserved address"),
    ("198.18.0.1", "a reserved address"),
])
def test_public_only_blocks_every_address_that_is_not_public(address, kind):
    assert refusal("public-only", address) == f"blocked by the egress policy (public-only): {address} is {kind}"
    assert refusal("no-metadata", address) is None
    assert refusal("any", address) is None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "172.32.0.1",
                                     "100.128.0.1", "169.253.255.255"])
def test_public_addresses_pass_every_mode(address):
    for mode in ("no-metadata", "public-only", "any"):
        assert refusal(mode, address) is None


@pytest.mark.parametrize("value", ["none", "public", "ANYTHING", "public_only"])
def test_an_unknown_egress_mode_is_refused_at_start_up(env, value):
    with pytest.raises(ConfigError, match="BACKEND_EGRESS must be one of no-metadata, public-only, any"):
        load_settings({**env, "BACKEND_EGRESS": value})


def test_the_egress_mode_defaults_to_no_metadata_and_ignores_case(env):
    assert load_settings(env).egress == "no-metadata"
    assert load_settings({**env, "BACKEND_EGRESS": "Public-Only"}).egress == "public-only"


# -- every kind of outbound request, against loopback fakes ---------------------------------------------

def blocked(mode: str = "public-only", address: str = "127.0.0.1") -> str:
    return f"blocked by the egress policy ({mode}): {address} is a loopback address"


async def add(api, url: str, **fields) -> dict:
    response = await api.post("/api/providers", json={"name": f"Egress {next(_names)}", "base_url": url,
                                                      "api_key": "sk-egress-0123456789abcdef", **fields})
    assert response.code == 201, response.body
    return response.json()


def assert_blocked_result(result: dict) -> None:
    assert (result["status"], result["status_code"]) == ("error", None)
    assert result["detail"] in (blocked(), blocked(address="::1"))  # localhost may resolve to either first
    assert result["timings"] == NO_TIMINGS


@pytest.mark.env(BACKEND_EGRESS="public-only")
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_public_only_blocks_every_probe_to_loopback_and_sends_nothing(api, fake_provider, host):
    url = fake_provider.url.replace("127.0.0.1", host) + "/v1"
    provider = await add(api, url)
    assert_blocked_result((await api.post(f"/api/providers/{provider['id']}/test")).json())
    bulk = (await api.post("/api/providers/test")).json()["results"]
    assert_blocked_result(bulk[0])
    unsaved = await api.post("/api/providers/test-connection", json={"name": "unsaved", "base_url": url})
    assert_blocked_result(unsaved.json())
    for method, path in (("GET", "discover"), ("POST", "sync")):
        response = await api.request(method, f"/api/providers/{provider['id']}/models/{path}",
                                     body=b"" if method == "POST" else None)
        assert response.code == 502 and "blocked by the egress policy (public-only)" in response.json()["detail"]
    assert fake_provider.requests == []
    history = (await api.get(f"/api/providers/{provider['id']}/tests")).json()["results"]
    assert len(history) == 4 and all(r["detail"] in (blocked(), blocked(address="::1")) for r in history)
    assert (await api.get(f"/api/providers/{provider['id']}")).json()["health"]["state"] == "down"


@pytest.mark.env(BACKEND_EGRESS="public-only")
async def test_public_only_blocks_webhook_deliveries_and_pings_to_loopback(api, webhook_receiver, runtime):
    webhook = (await api.post("/api/webhooks", json={"url": webhook_receiver.url + "/hook"})).json()
    ping = (await api.post(f"/api/webhooks/{webhook['id']}/ping")).json()
    assert (ping["outcome"], ping["status_code"], ping["latency_ms"], ping["error"]) == ("failed", None, None,
                                                                                         blocked())
    provider = await add(api, "http://localhost:9/v1")
    await api.post(f"/api/providers/{provider['id']}/test")
    await api.post(f"/api/providers/{provider['id']}/test")  # down: an event for the webhook

    async def logged() -> list:
        return (await api.get(f"/api/webhooks/{webhook['id']}/deliveries")).json()["deliveries"]

    for _ in range(100):  # 5 s at most
        log = await logged()
        if len(log) == 2:
            break
        await asyncio.sleep(0.05)
    assert [(d["type"], d["outcome"], d["error"]) for d in log] == [
        ("provider.down", "retry", blocked()), ("webhook.ping", "failed", blocked())]  # the receiver is 127.0.0.1
    assert webhook_receiver.requests == []


@pytest.mark.env(BACKEND_EGRESS="any")
async def test_any_lets_loopback_through(api, fake_provider):
    provider = await add(api, fake_provider.url + "/v1")
    assert (await api.post(f"/api/providers/{provider['id']}/test")).json()["status"] == "online"


# -- certificates --------------------------------------------------------------------------------------

@pytest.fixture
def authority(tmp_path):
    return make_ca(tmp_path / "ca")


@pytest.fixture
def https_provider(io_loop, authority):
    """A loopback HTTPS fake provider with a certificate from the test's CA, valid for 30 days."""
    issued = authority.issue(days=30)
    fake, stop = serve_fake_provider(issued.context)
    fake.issued = issued
    yield fake
    stop()


async def test_an_https_provider_signed_by_an_unknown_ca_is_a_tls_failure(api, https_provider):
    provider = await add(api, https_provider.url + "/v1")
    result = (await api.post(f"/api/providers/{provider['id']}/test")).json()
    assert result["status"] == "offline" and result["detail"].startswith("TLS failure")
    assert result["tls"] is None and result["timings"]["connect_ms"] is not None


@pytest.fixture
def env_with_bundle(env, authority):
    env["BACKEND_PROBE_CA_BUNDLE"] = str(authority.pem_path)
    return env


async def test_with_the_ca_bundle_every_https_result_carries_the_certificate(env_with_bundle, api, https_provider,
                                                                             fake_provider):
    provider = await add(api, https_provider.url + "/v1")
    for _ in range(2):  # no TLS session is reused: the second probe sees the certificate too
        result = (await api.post(f"/api/providers/{provider['id']}/test")).json()
        assert result["status"] == "online", result
        tls = result["tls"]
        expected = https_provider.issued.not_after.astimezone(timezone.utc)
        assert datetime.fromisoformat(tls["not_after"].replace("Z", "+00:00")) == expected
        assert "fake-provider.test" in tls["subject"] and "Registry Test CA" in tls["issuer"]
        assert tls["days_left"] in (29, 30)
        assert result["timings"]["tls_ms"] is not None
    plain = await add(api, fake_provider.url + "/v1")
    assert (await api.post(f"/api/providers/{plain['id']}/test")).json()["tls"] is None
    assert [e["type"] for e in (await api.get("/api/events")).json()["events"]] == ["provider.up", "provider.up"]


async def test_a_certificate_near_expiry_raises_one_event_per_certificate(env_with_bundle, api, authority, io_loop):
    first = authority.issue(days=5)
    fake, stop = serve_fake_provider(first.context)
    try:
        provider = await add(api, fake.url + "/v1")
        for _ in range(3):
            assert (await api.post(f"/api/providers/{provider['id']}/test")).json()["status"] == "online"
    finally:
        stop()
    events = (await api.get(f"/api/providers/{provider['id']}/events")).json()["events"]
    warnings = [e for e in events if e["type"] == "provider.cert_expiring"]
    assert len(warnings) == 1
    assert warnings[0]["result"]["tls"]["days_left"] in (4, 5) and "expires" in warnings[0]["reason"]
    # A new certificate (still near expiry) on the same address is warned about once more.
    second = authority.issue(days=3)
    fake, stop = serve_fake_provider(second.context)
    try:
        await api.patch(f"/api/providers/{provider['id']}", json={"base_url": fake.url + "/v1"})
        for _ in range(2):
            await api.post(f"/api/providers/{provider['id']}/test")
    finally:
        stop()
    events = (await api.get(f"/api/providers/{provider['id']}/events")).json()["events"]
    assert [e["type"] for e in events].count("provider.cert_expiring") == 2


@pytest.mark.env(BACKEND_CERT_WARN_DAYS="3")
async def test_the_warning_threshold_comes_from_the_environment(env_with_bundle, api, authority, io_loop):
    issued = authority.issue(days=5)
    fake, stop = serve_fake_provider(issued.context)
    try:
        provider = await add(api, fake.url + "/v1")
        await api.post(f"/api/providers/{provider['id']}/test")
    finally:
        stop()
    events = (await api.get(f"/api/providers/{provider['id']}/events")).json()["events"]
    assert [e["type"] for e in events] == ["provider.up"]


async def test_webhook_deliveries_trust_the_ca_bundle_too(env_with_bundle, api, authority, io_loop):
    receiver, stop = serve_fake_provider(authority.issue(days=30).context)
    try:
        webhook = (await api.post("/api/webhooks", json={"url": receiver.url + "/hook"})).json()
        ping = (await api.post(f"/api/webhooks/{webhook['id']}/ping")).json()
        assert (ping["outcome"], ping["status_code"]) == ("delivered", 200), ping
        assert [r.path for r in receiver.requests] == ["/hook"]
    finally:
        stop()


async def test_without_the_bundle_a_private_ca_webhook_fails_with_a_tls_error(api, authority, io_loop):
    receiver, stop = serve_fake_provider(authority.issue(days=30).context)
    try:
        webhook = (await api.post("/api/webhooks", json={"url": receiver.url + "/hook"})).json()
        ping = (await api.post(f"/api/webhooks/{webhook['id']}/ping")).json()
        assert ping["outcome"] == "failed" and ping["error"].startswith("TLS failure")
    finally:
        stop()


@pytest.mark.parametrize("content, message", [(None, "cannot be read"), ("not a certificate", "holds no PEM")])
def test_a_ca_bundle_that_cannot_be_used_is_refused_at_start_up(env, tmp_path, content, message):
    path = tmp_path / "bundle.pem"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings({**env, "BACKEND_PROBE_CA_BUNDLE": str(path)})
