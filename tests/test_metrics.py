"""GET /metrics: the Prometheus text format, parsed with prometheus_client's own parser and checked
against what the API says (probe results, health, counts), request counts by route pattern (never a
raw path), backup writes, webhook deliveries; who may read it (roles, scope, the Origin rule); and
BACKEND_METRICS=off."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from handlers.metrics import route_label
from registry.metrics import unix_seconds
from support.certificates import make_ca
from support.fake_provider import serve_fake_provider
from support.waiting import wait_until

pytestmark = pytest.mark.gen_test(timeout=30)

ADMIN = "metrics-admin-token-0123456789"
with_admin = pytest.mark.env(BACKEND_ADMIN_TOKEN=ADMIN)
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
PHASES = ("dns", "connect", "tls", "first_byte", "total")
_names = itertools.count(1)


@dataclass
class Scrape:
    """One parsed exposition: every sample, by sample name."""
    samples: dict[str, list]
    families: set[str]

    def all(self, name: str, **labels: str) -> list:
        return [s for s in self.samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the one sample of `name` with these labels (None when there is none)."""
        matching = self.all(name, **labels)
        assert len(matching) <= 1, matching
        return matching[0].value if matching else None


async def scrape(api, token=...) -> Scrape:
    response = await api.get("/metrics", token=token)
    assert response.code == 200, response.body
    samples: dict[str, list] = {}
    families = set()
    for family in text_string_to_metric_families(response.body.decode()):
        families.add(family.name)
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return Scrape(samples, families)


async def scrape_until(api, condition, message: str, timeout: float = 5.0) -> Scrape:
    """Scrapes until `condition(scrape)` holds (a failed assertion after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = await scrape(api)
        if condition(metrics):
            return metrics
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for: {message}"
        await asyncio.sleep(0.05)


async def add_provider(api, url: str, token=..., **fields) -> dict:
    body = {"name": f"Metered {next(_names)}", "base_url": url, "api_key": "sk-metrics-0123456789abcdef", **fields}
    response = await api.post("/api/providers", json=body, token=token)
    assert response.code == 201, response.body
    return response.json()


def provider_labels(provider: dict) -> dict[str, str]:
    return {"provider_id": str(provider["id"]), "provider": provider["name"], "type": provider["type"]}


# -- the format --------------------------------------------------------------------------------------

async def test_metrics_are_prometheus_text_with_every_family_and_the_process_collectors(api):
    response = await api.get("/metrics")
    assert response.code == 200
    assert response.headers["Content-Type"] == PROMETHEUS_TEXT
    assert response.headers["Cache-Control"] == "no-store"
    families = (await scrape(api)).families
    assert {"registry_provider_up", "registry_provider_last_probe_success",
            "registry_provider_last_probe_duration_seconds", "registry_provider_last_probe_status_code",
            "registry_provider_last_probe_timestamp_seconds", "registry_provider_tls_cert_not_after_timestamp_seconds",
            "registry_probe_duration_seconds", "registry_providers", "registry_http_requests",
            "registry_http_request_duration_seconds", "registry_backup_writes",
            "registry_backup_last_success_timestamp_seconds", "registry_backup_write_duration_seconds",
            "registry_webhook_deliveries", "process_cpu_seconds", "process_resident_memory_bytes",
            "python_info"} <= families


async def test_every_outcome_is_a_series_at_zero_from_the_start(api):
    metrics = await scrape(api)
    for outcome in ("delivered", "retry", "failed"):
        assert metrics.value("registry_webhook_deliveries_total", outcome=outcome) == 0
    assert metrics.value("registry_backup_writes_total", outcome="failure") == 0
    assert metrics.value("registry_providers", active="true") == 0
    assert metrics.value("registry_providers", active="false") == 0


# -- providers, from the database at scrape time -----------------------------------------------------

async def test_a_probe_shows_in_the_provider_series_exactly_as_the_api_reports_it(api, fake_provider):
    provider = await add_provider(api, fake_provider.url + "/v1")
    result = (await api.post(f"/api/providers/{provider['id']}/test")).json()
    stored = (await api.get(f"/api/providers/{provider['id']}")).json()
    assert stored["last_test"] == result and result["status"] == "online"
    labels = provider_labels(provider)
    metrics = await scrape(api)
    assert metrics.value("registry_provider_up", **labels) == 1
    assert metrics.value("registry_provider_last_probe_success", **labels) == 1
    assert metrics.value("registry_provider_last_probe_status_code", **labels) == 200
    assert metrics.value("registry_provider_last_probe_timestamp_seconds", **labels) == pytest.approx(
        datetime.fromisoformat(result["checked_at"].replace("Z", "+00:00")).timestamp())
    for phase in PHASES:
        milliseconds = result["timings"][f"{phase}_ms"]
        shown = metrics.value("registry_provider_last_probe_duration_seconds", phase=phase, **labels)
        assert shown == (None if milliseconds is None else pytest.approx(milliseconds / 1000)), phase
    assert result["timings"]["tls_ms"] is None  # plain http: the tls phase is absent, not zero
    assert result["timings"]["total_ms"] is not None
    assert metrics.value("registry_provider_tls_cert_not_after_timestamp_seconds", **labels) is None
    probe = {"type": "openai", "status": "online"}
    assert metrics.value("registry_probe_duration_seconds_count", **probe) == 1
    assert metrics.value("registry_probe_duration_seconds_sum", **probe) == pytest.approx(result["latency_ms"] / 1000)


async def test_failed_probes_show_as_no_success_and_down_once_health_says_so(api, fake_provider):
    fake_provider.answer("/v1/models", status=401, body={"error": "no"})
    provider = await add_provider(api, fake_provider.url + "/v1")
    labels = provider_labels(provider)
    assert (await api.post(f"/api/providers/{provider['id']}/test")).json()["status"] == "unauthorized"
    metrics = await scrape(api)
    assert metrics.value("registry_provider_last_probe_success", **labels) == 0
    assert metrics.value("registry_provider_last_probe_status_code", **labels) == 401
    assert (await api.get(f"/api/providers/{provider['id']}")).json()["health"]["state"] == "unknown"
    assert metrics.value("registry_provider_up", **labels) is None  # unknown: absent, not 0
    await api.post(f"/api/providers/{provider['id']}/test")  # the second failure makes it down
    assert (await api.get(f"/api/providers/{provider['id']}")).json()["health"]["state"] == "down"
    metrics = await scrape(api)
    assert metrics.value("registry_provider_up", **labels) == 0
    assert metrics.value("registry_probe_duration_seconds_count", type="openai", status="unauthorized") == 2


async def test_an_unanswered_probe_has_no_status_code_series(api):
    provider = await add_provider(api, "http://127.0.0.1:9/v1")  # nothing listens on the discard port
    result = (await api.post(f"/api/providers/{provider['id']}/test")).json()
    assert result["status"] == "offline" and result["status_code"] is None
    metrics = await scrape(api)
    labels = provider_labels(provider)
    assert metrics.value("registry_provider_last_probe_status_code", **labels) is None
    assert metrics.value("registry_provider_last_probe_success", **labels) == 0
    assert metrics.value("registry_provider_last_probe_timestamp_seconds", **labels) is not None


async def test_providers_never_probed_have_no_probe_series_and_are_counted_by_active(api):
    active = await add_provider(api, "https://a.example.com/v1")
    await add_provider(api, "https://b.example.com/v1")
    inactive = await add_provider(api, "https://c.example.com/v1", is_active=False)
    metrics = await scrape(api)
    assert metrics.value("registry_providers", active="true") == 2
    assert metrics.value("registry_providers", active="false") == 1
    for provider in (active, inactive):
        labels = provider_labels(provider)
        for name in ("registry_provider_up", "registry_provider_last_probe_success",
                     "registry_provider_last_probe_status_code", "registry_provider_last_probe_timestamp_seconds"):
            assert metrics.value(name, **labels) is None, name
        assert metrics.all("registry_provider_last_probe_duration_seconds", **labels) == []
    assert (await api.delete(f"/api/providers/{active['id']}")).code == 204
    assert (await scrape(api)).value("registry_providers", active="true") == 1


@pytest.fixture
def authority(tmp_path):
    return make_ca(tmp_path / "ca")


@pytest.fixture
def env_with_bundle(env, authority):
    env["BACKEND_PROBE_CA_BUNDLE"] = str(authority.pem_path)
    return env


async def test_the_certificate_expiry_of_an_https_probe_is_a_series(env_with_bundle, api, authority, io_loop):
    issued = authority.issue(days=30)
    fake, stop = serve_fake_provider(issued.context)
    try:
        provider = await add_provider(api, f"https://127.0.0.1:{fake.port}/v1")
        result = (await api.post(f"/api/providers/{provider['id']}/test")).json()
    finally:
        stop()
    assert result["status"] == "online" and result["tls"] is not None, result
    metrics = await scrape(api)
    labels = provider_labels(provider)
    assert metrics.value("registry_provider_tls_cert_not_after_timestamp_seconds", **labels) == pytest.approx(
        issued.not_after.timestamp())
    assert metrics.value("registry_provider_last_probe_duration_seconds", phase="tls", **labels) == pytest.approx(
        result["timings"]["tls_ms"] / 1000)


# -- requests ----------------------------------------------------------------------------------------

async def test_requests_are_counted_by_route_pattern_never_by_raw_path(api):
    unknown = f"/no-such-{uuid.uuid4().hex}/987654321"
    before = await scrape(api)
    assert (await api.get("/api/providers/123456")).code == 404
    assert (await api.get(unknown)).code == 404
    assert (await api.get("/api/providers")).code == 200
    assert (await api.request("PURGE", "/api/providers")).code == 405
    after = await scrape(api)

    def added(**labels: str) -> float:
        return ((after.value("registry_http_requests_total", **labels) or 0)
                - (before.value("registry_http_requests_total", **labels) or 0))

    assert added(method="GET", route="/api/providers/{provider_id}", code="404") == 1
    assert added(method="GET", route="unmatched", code="404") == 1
    assert added(method="GET", route="/api/providers", code="200") == 1
    assert added(method="other", route="/api/providers", code="405") == 1
    assert added(method="GET", route="/metrics", code="200") == 1  # the scrape before
    for forbidden in ("123456", "987654321", "no-such", "PURGE"):
        assert not [s for samples in after.samples.values() for s in samples
                    if any(forbidden in value for value in s.labels.values())], forbidden
    durations = after.value("registry_http_request_duration_seconds_count", route="/api/providers/{provider_id}")
    assert durations >= 1
    assert after.value("registry_http_request_duration_seconds_bucket", route="/api/providers/{provider_id}",
                       le="+Inf") == durations


async def test_static_files_are_counted_under_their_route(api):
    assert (await api.get("/docs/static/swagger-ui.css")).code == 200
    assert (await api.get("/favicon.ico")).code == 404
    metrics = await scrape(api)
    assert metrics.value("registry_http_requests_total", method="GET", route="/docs/static/{path}", code="200") == 1
    assert metrics.value("registry_http_requests_total", method="GET", route="/favicon.ico", code="404") == 1


@pytest.mark.parametrize("pattern, label", [
    (r"/api/providers/(?P<provider_id>[0-9]{1,18})$", "/api/providers/{provider_id}"),
    (r"/api/webhooks/(?P<webhook_id>[0-9]{1,18})/ping$", "/api/webhooks/{webhook_id}/ping"),
    (r"/openapi\.json$", "/openapi.json"), (r"/docs/?$", "/docs"), (r"/$", "/"),
    (r"/ui/static/(.*)$", "/ui/static/{path}"), (r"/(favicon\.ico)$", "/favicon.ico"),
])
def test_a_route_pattern_becomes_its_label(pattern, label):
    assert route_label(pattern) == label


def test_api_timestamps_read_as_unix_seconds():
    assert unix_seconds("2026-11-26T10:00:00.123Z") == pytest.approx(1_795_687_200.123)
    assert unix_seconds("1970-01-01T00:00:00.000Z") == 0


# -- backup writes and webhook deliveries --------------------------------------------------------------

async def test_a_change_counts_one_backup_write_with_its_duration(api, provider_body):
    before = await scrape(api)
    started = time.time()
    assert (await api.post("/api/providers", json=provider_body())).code == 201
    after = await scrape(api)
    for name in ("registry_backup_writes_total", "registry_backup_write_duration_seconds_count"):
        labels = {"outcome": "success"} if name.endswith("_total") else {}
        assert after.value(name, **labels) - before.value(name, **labels) == 1, name
    assert after.value("registry_backup_writes_total", outcome="failure") == 0
    assert started <= after.value("registry_backup_last_success_timestamp_seconds") <= time.time()


async def test_a_failed_backup_write_is_counted_as_a_failure(api, provider_body, runtime):
    before = await scrape(api)
    runtime.settings.backup_file.unlink(missing_ok=True)
    runtime.settings.backup_file.mkdir()  # a directory where the file should be: the rename fails
    (runtime.settings.backup_file / "blocker").write_text("x")
    assert (await api.post("/api/providers", json=provider_body())).code == 500
    after = await scrape(api)
    assert after.value("registry_backup_writes_total", outcome="failure") >= 1  # and any attempt to put it back
    assert after.value("registry_backup_writes_total", outcome="success") == before.value(
        "registry_backup_writes_total", outcome="success")
    assert after.value("registry_http_requests_total", method="POST", route="/api/providers", code="500") == 1


def test_the_last_success_starts_at_the_backup_file_time(runtime, app):
    from registry.metrics import Metrics
    stamp = runtime.settings.backup_file.stat().st_mtime
    assert Metrics(runtime.inventory).registry.get_sample_value(
        "registry_backup_last_success_timestamp_seconds") == stamp


async def test_webhook_deliveries_are_counted_by_outcome(api, fake_provider, webhook_receiver):
    response = await api.post("/api/webhooks", json={"url": webhook_receiver.url + "/hook"})
    assert response.code == 201
    provider = await add_provider(api, fake_provider.url + "/v1")
    await api.post(f"/api/providers/{provider['id']}/test")  # unknown -> up: one event, one message
    metrics = await scrape_until(
        api, lambda m: m.value("registry_webhook_deliveries_total", outcome="delivered") == 1, "the delivery")
    assert [r.path for r in webhook_receiver.requests] == ["/hook"]
    assert metrics.value("registry_webhook_deliveries_total", outcome="retry") == 0
    assert metrics.value("registry_webhook_deliveries_total", outcome="failed") == 0


@pytest.mark.env(BACKEND_WEBHOOK_RETRY_SECONDS="0.001")
async def test_a_receiver_that_keeps_failing_counts_five_retries_then_a_failure(api, fake_provider,
                                                                              webhook_receiver, runtime):
    webhook_receiver.answer("/hook", status=503)
    response = await api.post("/api/webhooks", json={"url": webhook_receiver.url + "/hook"})
    assert response.code == 201
    provider = await add_provider(api, fake_provider.url + "/v1")
    await api.post(f"/api/providers/{provider['id']}/test")
    await wait_until(lambda: len(webhook_receiver.requests) == 6, timeout=15, message="six attempts")
    await wait_until(lambda: runtime.conn.execute(
        "SELECT count(*) FROM webhook_deliveries WHERE outcome = 'failed'").fetchone()[0] == 1,
        timeout=5, message="the failure recorded")
    metrics = await scrape(api)
    assert metrics.value("registry_webhook_deliveries_total", outcome="retry") == 5
    assert metrics.value("registry_webhook_deliveries_total", outcome="failed") == 1
    assert metrics.value("registry_webhook_deliveries_total", outcome="delivered") == 0


# -- who may read them -------------------------------------------------------------------------------

async def make_token(api, role: str, **fields) -> str:
    response = await api.post("/api/tokens", json={"name": f"{role}-{next(_names)}", "role": role, **fields},
                              token=ADMIN)
    assert response.code == 201, response.body
    return response.json()["token"]


async def test_without_authentication_metrics_are_open_on_loopback(api):
    response = await api.get("/metrics", token=None)
    assert response.code == 200 and b"registry_providers" in response.body


@with_admin
async def test_with_authentication_admins_and_viewers_may_read_metrics_and_consumers_may_not(api):
    viewer, consumer = await make_token(api, "viewer"), await make_token(api, "consumer")
    missing = await api.get("/metrics", token=None)
    assert missing.code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert "token" in missing.json()["detail"]
    assert (await api.get("/metrics", token="prt_" + "x" * 43)).code == 401
    assert (await api.get("/metrics", token=ADMIN)).code == 200
    assert (await api.get("/metrics", token=viewer)).code == 200
    refused = await api.get("/metrics", token=consumer)
    assert refused.code == 403 and "consumer" in refused.json()["detail"]
    assert b"registry_" not in refused.body
    denied = (await api.get("/api/audit?action=auth.denied", token=ADMIN)).json()["events"]
    assert len(denied) == 1 and denied[0]["count"] == 3  # the two 401s and the consumer's 403


@with_admin
async def test_a_scoped_viewer_sees_only_its_providers_series(api, fake_provider):
    mine = await add_provider(api, fake_provider.url + "/v1", token=ADMIN)
    other = await add_provider(api, fake_provider.url + "/v1", token=ADMIN)
    for provider in (mine, other):
        assert (await api.post(f"/api/providers/{provider['id']}/test", token=ADMIN)).code == 200
    viewer = await make_token(api, "viewer", providers=[mine["id"]])
    everything, scoped = await scrape(api, token=ADMIN), await scrape(api, token=viewer)
    for metrics, ids in ((everything, {str(mine["id"]), str(other["id"])}), (scoped, {str(mine["id"])})):
        for name in ("registry_provider_up", "registry_provider_last_probe_success",
                     "registry_provider_last_probe_status_code", "registry_provider_last_probe_timestamp_seconds",
                     "registry_provider_last_probe_duration_seconds"):
            assert {s.labels["provider_id"] for s in metrics.all(name)} == ids, name
    assert everything.value("registry_providers", active="true") == 2
    assert scoped.value("registry_providers", active="true") == 1
    assert other["name"] not in str(scoped.samples)


async def test_a_request_from_a_foreign_origin_is_refused(api):
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        response = await api.get("/metrics", headers=headers)
        assert response.code == 403, headers
        assert "BACKEND_ALLOWED_ORIGINS" in response.json()["detail"]
        assert "Access-Control-Allow-Origin" not in response.headers
    assert (await api.get("/metrics", headers={"Origin": api.base_url})).code == 200  # its own origin


@pytest.mark.env(BACKEND_ALLOWED_ORIGINS="http://dashboard.example.com")
async def test_a_listed_origin_may_read_metrics_with_cors(api):
    response = await api.get("/metrics", headers={"Origin": "http://dashboard.example.com"})
    assert response.code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://dashboard.example.com"


# -- BACKEND_METRICS=off ----------------------------------------------------------------------------

@pytest.mark.env(BACKEND_METRICS="off")
async def test_with_metrics_off_there_is_no_metrics_route_and_nothing_is_recorded(api, app, runtime, fake_provider):
    response = await api.get("/metrics")
    assert response.code == 404
    assert response.json()["detail"] == "No such path: /metrics"
    assert app.settings["metrics"] is None and app.settings["observe_request"] is None
    assert runtime.inventory.observe_backup_write is None
    assert app.settings["probes"].observe_probe is None
    provider = await add_provider(api, fake_provider.url + "/v1")
    assert (await api.post(f"/api/providers/{provider['id']}/test")).json()["status"] == "online"
