"""Probe history with its summary, test-before-save, model discovery and sync, scheduled checks."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from support.api import http_json
from support.waiting import wait_until

pytestmark = pytest.mark.gen_test(timeout=60)


async def add(api, fake_provider, **fields) -> dict:
    body = {"name": f"p-{time.monotonic_ns()}", "base_url": fake_provider.url + "/v1",
            "api_key": "sk-history-0123456789", "models": ["model-a", "model-b"], **fields}
    response = await api.post("/api/providers", json=body)
    assert response.code == 201, response.body
    return response.json()


def result(status: str, latency: float, checked_at: str = "2026-11-26T10:00:00Z") -> dict:
    return {"status": status, "status_code": 200 if status == "online" else None, "latency_ms": latency,
            "detail": None, "missing_models": None, "checked_at": checked_at,
            "timings": {"dns_ms": None, "connect_ms": None, "tls_ms": None, "first_byte_ms": None, "total_ms": None}}


# -- history ------------------------------------------------------------------------------------------

async def test_history_lists_results_newest_first_with_a_summary(api, fake_provider):
    provider = await add(api, fake_provider)
    first = (await api.post(f"/api/providers/{provider['id']}/test")).json()
    fake_provider.answer("/v1/models", status=503)
    second = (await api.post(f"/api/providers/{provider['id']}/test")).json()
    await api.post("/api/providers/test")  # the bulk test lands in history too
    response = await api.get(f"/api/providers/{provider['id']}/tests")
    assert response.code == 200
    history = response.json()
    assert [r["status"] for r in history["results"]] == ["error", "error", "online"]
    assert history["results"][1] == second and history["results"][2] == first
    assert history["summary"]["count"] == 3
    assert history["summary"]["online_pct"] == pytest.approx(100 / 3, abs=0.01)


async def test_history_percentiles_are_over_the_windows_online_results_only(api, fake_provider, runtime):
    provider = await add(api, fake_provider)
    for latency in range(1, 21):  # 1..20 ms, oldest first
        await runtime.inventory.record_probe_results({provider["id"]: result("online" if latency % 4 else "offline",
                                                                     float(latency))})
    summary = (await api.get(f"/api/providers/{provider['id']}/tests")).json()["summary"]
    # Online: 1..20 but 4, 8, 12, 16 and 20 (15 results); the offline ones count, but have no latency.
    assert summary == {"count": 20, "online_pct": 75.0, "p50_ms": 10.0, "p95_ms": 18.3}
    window = (await api.get(f"/api/providers/{provider['id']}/tests?limit=4")).json()
    assert [r["latency_ms"] for r in window["results"]] == [20.0, 19.0, 18.0, 17.0]
    assert window["summary"]["count"] == 4
    assert window["summary"]["online_pct"] == 75.0  # 20 is offline
    assert window["summary"]["p50_ms"] == 18.0  # of 17, 18 and 19


async def test_history_keeps_the_last_hundred(api, fake_provider, runtime):
    provider = await add(api, fake_provider)
    for i in range(105):
        await runtime.inventory.record_probe_results({provider["id"]: result("online", float(i))})
    history = (await api.get(f"/api/providers/{provider['id']}/tests?limit=1000")).json()
    assert history["summary"]["count"] == 100
    assert history["results"][0]["latency_ms"] == 104.0
    assert history["results"][-1]["latency_ms"] == 5.0
    stored = runtime.conn.execute("SELECT count(*) FROM probe_results WHERE provider_id = ?",
                                  (provider["id"],)).fetchone()[0]
    assert stored == 100


async def test_empty_history(api, fake_provider):
    provider = await add(api, fake_provider)
    history = (await api.get(f"/api/providers/{provider['id']}/tests")).json()
    assert history == {"results": [], "summary": {"count": 0, "online_pct": None, "p50_ms": None, "p95_ms": None}}


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x"])
async def test_history_bad_limit_is_400(api, fake_provider, query):
    provider = await add(api, fake_provider)
    assert (await api.get(f"/api/providers/{provider['id']}/tests?{query}")).code == 400


async def test_history_of_unknown_provider_is_404(api):
    assert (await api.get("/api/providers/777/tests")).code == 404


async def test_deleting_a_provider_deletes_its_history(api, fake_provider, runtime):
    provider = await add(api, fake_provider)
    await api.post(f"/api/providers/{provider['id']}/test")
    await api.delete(f"/api/providers/{provider['id']}")
    assert runtime.conn.execute("SELECT count(*) FROM probe_results").fetchone()[0] == 0


# -- test before save ---------------------------------------------------------------------------------

async def test_test_connection_probes_an_unsaved_provider_and_stores_nothing(api, fake_provider, runtime):
    backup_before = runtime.settings.backup_file.read_bytes()
    response = await api.post("/api/providers/test-connection", json={
        "name": "Unsaved", "type": "anthropic", "base_url": fake_provider.url + "/v1/", "api_key": "sk-unsaved-12345",
        "models": ["model-a", "model-z"]})
    assert response.code == 200
    probe = response.json()
    assert probe["status"] == "online"
    assert probe["missing_models"] == ["model-z"]
    assert probe["timings"]["total_ms"] is not None
    [request] = fake_provider.requests
    assert request.path == "/v1/models"
    assert request.headers["x-api-key"] == "sk-unsaved-12345"
    assert (await api.get("/api/providers")).json() == []
    assert runtime.settings.backup_file.read_bytes() == backup_before


async def test_test_connection_validates_like_create(api, fake_provider):
    response = await api.post("/api/providers/test-connection", json={"name": "x", "base_url": "ftp://nope"})
    assert response.code == 422
    assert "/base_url" in [e["path"] for e in response.json()["errors"]]
    assert fake_provider.requests == []


async def test_test_connection_reports_an_unreachable_provider(api):
    response = await api.post("/api/providers/test-connection",
                              json={"name": "Down", "base_url": "http://127.0.0.1:9/v1"})
    assert response.code == 200
    assert response.json()["status"] == "offline"


# -- model discovery and sync -------------------------------------------------------------------------

async def test_discover_compares_configured_and_upstream_models_and_records_only_its_probe(api, fake_provider):
    provider = await add(api, fake_provider, models=["model-a", "model-b"])
    fake_provider.answer("/v1/models", body={"data": [{"id": "model-a"}, {"id": "model-c"}, {"id": "model-d"}]})
    response = await api.get(f"/api/providers/{provider['id']}/models/discover")
    assert response.code == 200
    assert response.json() == {"models": ["model-a", "model-c", "model-d"], "missing": ["model-b"],
                               "new": ["model-c", "model-d"]}
    after = (await api.get(f"/api/providers/{provider['id']}")).json()
    assert after["last_test"]["status"] == "online" and after["last_test"]["missing_models"] == ["model-b"]
    assert after["health"]["state"] == "up"
    history = (await api.get(f"/api/providers/{provider['id']}/tests")).json()["results"]
    assert history == [after["last_test"]]
    unchanged = ("models", "updated_at", "name", "base_url", "is_active", "api_key_preview")
    assert {k: after[k] for k in unchanged} == {k: provider[k] for k in unchanged}


async def test_discover_works_for_inactive_providers_and_each_list_shape(api, fake_provider):
    provider = await add(api, fake_provider, type="gemini", is_active=False, models=["gemini-pro"])
    fake_provider.answer("/v1/models", body={"models": [{"name": "models/gemini-pro"}, {"name": "models/gemini-2"}]})
    body = (await api.get(f"/api/providers/{provider['id']}/models/discover")).json()
    assert body == {"models": ["gemini-pro", "gemini-2"], "missing": [], "new": ["gemini-2"]}


async def test_sync_sets_the_models_to_the_upstream_list(api, fake_provider, runtime):
    provider = await add(api, fake_provider, type="ollama", models=["old-model"])
    fake_provider.answer("/v1/api/tags", body={"models": [{"name": "llama3:8b"}, {"name": "qwen2:7b"}]})
    response = await api.post(f"/api/providers/{provider['id']}/models/sync")
    assert response.code == 200
    synced = response.json()
    assert synced["models"] == ["llama3:8b", "qwen2:7b"]
    assert synced["last_test"]["missing_models"] == []  # recorded as of the synced list, not the old one
    assert synced["updated_at"] > provider["updated_at"]
    backup = json.loads(runtime.settings.backup_file.read_text())
    assert backup["providers"][0]["models"] == ["llama3:8b", "qwen2:7b"]


@pytest.mark.parametrize("answer, status_word", [
    ({"status": 500, "body": {"error": "boom"}}, "error"),
    ({"status": 401, "body": {"error": "bad key"}}, "unauthorized"),
    ({"status": 302, "headers": {"Location": "http://elsewhere.example/"}}, "error"),
    ({"status": 200, "body": "<html>not a list</html>"}, "online"),
])
async def test_upstream_without_a_usable_list_is_502_and_changes_nothing_but_the_probe_record(
        api, fake_provider, runtime, answer, status_word):
    provider = await add(api, fake_provider)
    fake_provider.answer("/v1/models", **answer)
    for method, path in (("GET", "discover"), ("POST", "sync")):
        response = await api.request(method, f"/api/providers/{provider['id']}/models/{path}",
                                     body=b"" if method == "POST" else None)
        assert response.code == 502
        assert status_word in response.json()["detail"]
    after = (await api.get(f"/api/providers/{provider['id']}")).json()
    assert after["last_test"]["status"] == status_word
    assert len((await api.get(f"/api/providers/{provider['id']}/tests")).json()["results"]) == 2
    # Two results that are not online: down (online ones make it up).
    assert after["health"]["state"] == ("up" if status_word == "online" else "down")
    unchanged = ("models", "updated_at", "name", "base_url", "is_active", "api_key_preview")
    assert {k: after[k] for k in unchanged} == {k: provider[k] for k in unchanged}
    backup = json.loads(runtime.settings.backup_file.read_text())["providers"][0]
    assert backup["models"] == provider["models"] and backup["last_test"] == after["last_test"]


async def test_discover_of_an_offline_provider_is_502(api, fake_provider):
    provider = await add(api, fake_provider, base_url="http://127.0.0.1:9/v1")
    response = await api.get(f"/api/providers/{provider['id']}/models/discover")
    assert response.code == 502
    assert "offline" in response.json()["detail"]


async def test_discover_unknown_provider_is_404(api):
    assert (await api.get("/api/providers/9999/models/discover")).code == 404
    assert (await api.post("/api/providers/9999/models/sync")).code == 404


# -- scheduled checks ---------------------------------------------------------------------------------

async def test_a_second_bulk_test_while_one_runs_is_409(api, fake_provider):
    fake_provider.answer("/v1/models", body={"data": []}, delay=0.5)
    await add(api, fake_provider)
    first = asyncio.ensure_future(api.post("/api/providers/test"))
    await wait_until(lambda: fake_provider.requests, message="the bulk test's first probe")
    second = await api.post("/api/providers/test")
    assert second.code == 409
    assert "already running" in second.json()["detail"]
    assert (await first).code == 200
    assert (await api.post("/api/providers/test")).code == 200  # free again afterwards


async def test_manual_bulk_test_during_a_scheduled_run_is_409(api, fake_provider, app):
    fake_provider.answer("/v1/models", body={"data": []}, delay=0.6)
    provider = await add(api, fake_provider)
    probes = app.settings["probes"]
    probes.start_schedule(0.1)
    try:
        deadline = time.monotonic() + 5
        while not fake_provider.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert fake_provider.requests, "the scheduled run did not start"
        assert (await api.post("/api/providers/test")).code == 409
    finally:
        await probes.stop_schedule()
    assert (await api.post("/api/providers/test")).code == 200  # a cancelled run releases the lock
    assert (await api.get(f"/api/providers/{provider['id']}/tests")).json()["summary"]["count"] >= 1


def test_server_runs_scheduled_checks_into_history_and_last_test(run_server, threaded_fake_provider):
    server = run_server({"BACKEND_API_KEY_SECRET": "s", "BACKEND_CHECK_INTERVAL_SECONDS": "0.3"})
    status, provider = http_json("POST", server.url + "/api/providers",
                                 {"name": "Scheduled", "base_url": threaded_fake_provider.url + "/v1"})
    assert status == 201
    deadline = time.monotonic() + 15
    history = {"results": []}
    while len(history["results"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        history = http_json("GET", f"{server.url}/api/providers/{provider['id']}/tests")[1]
    assert len(history["results"]) >= 2
    assert http_json("GET", f"{server.url}/api/providers/{provider['id']}")[1]["last_test"]["status"] == "online"
    assert server.stop() == 0  # the timer does not hold up shutdown
    assert "scheduled probe" in server.log()
