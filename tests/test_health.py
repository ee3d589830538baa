"""Health state (up / down / unknown with thresholds), what counts towards it, and the events its
changes raise: per provider and as a feed."""

from __future__ import annotations

import itertools
import json

import pytest

pytestmark = pytest.mark.gen_test(timeout=30)

UNKNOWN = {"state": "unknown", "since": None, "reason": None}
_names = itertools.count(1)


async def add(api, fake_provider, **fields) -> dict:
    body = {"name": f"Health {next(_names)}", "base_url": fake_provider.url + "/v1",
            "api_key": "sk-health-0123456789abcdef", **fields}
    response = await api.post("/api/providers", json=body)
    assert response.code == 201, response.body
    return response.json()


async def probe(api, provider_id: int) -> dict:
    response = await api.post(f"/api/providers/{provider_id}/test")
    assert response.code == 200, response.body
    return response.json()


async def health(api, provider_id: int) -> dict:
    return (await api.get(f"/api/providers/{provider_id}")).json()["health"]


async def events(api, provider_id: int) -> list[dict]:
    response = await api.get(f"/api/providers/{provider_id}/events")
    assert response.code == 200, response.body
    return response.json()["events"]


async def test_a_new_provider_is_unknown_and_one_online_result_makes_it_up_with_an_event(api, fake_provider):
    provider = await add(api, fake_provider)
    assert provider["health"] == UNKNOWN
    assert await events(api, provider["id"]) == []
    result = await probe(api, provider["id"])
    assert await health(api, provider["id"]) == {"state": "up", "since": result["checked_at"], "reason": "online"}
    [event] = await events(api, provider["id"])
    assert event["type"] == "provider.up" and (event["from"], event["to"]) == ("unknown", "up")
    assert event["provider_id"] == provider["id"] and event["provider_name"] == provider["name"]
    assert event["result"] == result and event["reason"] == "online"
    assert event["at"].endswith("Z")


async def test_down_after_two_failures_not_one_with_the_tipping_results_detail(api, fake_provider):
    provider = await add(api, fake_provider)
    await probe(api, provider["id"])
    fake_provider.answer("/v1/models", status=503, body={"error": {"message": "overloaded"}})
    await probe(api, provider["id"])
    assert (await health(api, provider["id"]))["state"] == "up"  # one failure is not enough
    tipping = await probe(api, provider["id"])
    state = await health(api, provider["id"])
    assert state["state"] == "down" and state["since"] == tipping["checked_at"]
    assert state["reason"] == tipping["detail"] and "503" in state["reason"]
    newest = (await events(api, provider["id"]))[0]
    assert newest["type"] == "provider.down" and (newest["from"], newest["to"]) == ("up", "down")
    assert newest["result"] == tipping
    await probe(api, provider["id"])  # still down: no new event
    assert len(await events(api, provider["id"])) == 2


async def test_an_unknown_provider_goes_down_without_ever_being_up(api):
    body = {"name": "Never up", "base_url": "http://127.0.0.1:9/v1"}
    provider = (await api.post("/api/providers", json=body)).json()
    first = await probe(api, provider["id"])
    assert first["status"] == "offline"
    assert (await health(api, provider["id"]))["state"] == "unknown"
    second = await probe(api, provider["id"])
    assert await health(api, provider["id"]) == {"state": "down", "since": second["checked_at"],
                                                 "reason": second["detail"]}
    [event] = await events(api, provider["id"])
    assert (event["type"], event["from"], event["to"]) == ("provider.down", "unknown", "down")


@pytest.mark.env(BACKEND_DOWN_AFTER="3", BACKEND_UP_AFTER="2")
async def test_the_thresholds_come_from_the_environment_and_a_mixed_run_restarts_the_count(api, fake_provider):
    provider = await add(api, fake_provider)
    await probe(api, provider["id"])
    assert (await health(api, provider["id"]))["state"] == "unknown"  # one of two online
    await probe(api, provider["id"])
    assert (await health(api, provider["id"]))["state"] == "up"
    fake_provider.answer("/v1/models", status=500)
    await probe(api, provider["id"])
    await probe(api, provider["id"])
    fake_provider.answer("/v1/models", body={"data": []})
    await probe(api, provider["id"])  # an online result ends the run of failures
    fake_provider.answer("/v1/models", status=500)
    await probe(api, provider["id"])
    await probe(api, provider["id"])
    assert (await health(api, provider["id"]))["state"] == "up"
    await probe(api, provider["id"])
    assert (await health(api, provider["id"]))["state"] == "down"
    assert [e["type"] for e in await events(api, provider["id"])] == ["provider.down", "provider.up"]


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_threshold_that_is_not_a_whole_number_of_at_least_one_is_refused(env, value):
    from registry.config import ConfigError, load_settings
    for name in ("BACKEND_DOWN_AFTER", "BACKEND_UP_AFTER"):
        with pytest.raises(ConfigError, match=name):
            load_settings({**env, name: value})


async def test_bulk_tests_discovery_and_sync_count_but_test_connection_does_not(api, fake_provider):
    provider = await add(api, fake_provider)
    body = {"name": "unsaved", "base_url": fake_provider.url + "/v1"}
    for _ in range(3):
        assert (await api.post("/api/providers/test-connection", json=body)).json()["status"] == "online"
    assert (await health(api, provider["id"]))["state"] == "unknown"
    assert (await api.post("/api/providers/test")).code == 200
    assert (await health(api, provider["id"]))["state"] == "up"
    fake_provider.answer("/v1/models", status=500)
    assert (await api.get(f"/api/providers/{provider['id']}/models/discover")).code == 502
    assert (await api.post(f"/api/providers/{provider['id']}/models/sync")).code == 502
    assert (await health(api, provider["id"]))["state"] == "down"
    fake_provider.answer("/v1/models", body={"data": [{"id": "m1"}]})
    assert (await api.post(f"/api/providers/{provider['id']}/models/sync")).code == 200
    assert (await health(api, provider["id"]))["state"] == "up"
    history = (await api.get(f"/api/providers/{provider['id']}/tests")).json()["results"]
    assert [r["status"] for r in history] == ["online", "error", "error", "online"]


async def test_the_feed_is_oldest_first_after_an_id_with_a_limit(api, fake_provider):
    first, second = await add(api, fake_provider), await add(api, fake_provider)
    await probe(api, first["id"])
    await probe(api, second["id"])
    fake_provider.answer("/v1/models", status=500)
    for _ in range(2):
        await probe(api, first["id"])
    feed = (await api.get("/api/events")).json()
    assert [(e["provider_id"], e["type"]) for e in feed["events"]] == [
        (first["id"], "provider.up"), (second["id"], "provider.up"), (first["id"], "provider.down")]
    ids = [e["id"] for e in feed["events"]]
    assert ids == sorted(ids) and feed["next_after"] == ids[-1]
    page = (await api.get(f"/api/events?after={ids[0]}&limit=1")).json()
    assert [e["id"] for e in page["events"]] == [ids[1]] and page["next_after"] == ids[1]
    assert (await api.get(f"/api/events?after={ids[-1]}")).json() == {"events": [], "next_after": ids[-1]}
    newest_first = await events(api, first["id"])
    assert [e["type"] for e in newest_first] == ["provider.down", "provider.up"]
    assert [e["type"] for e in (await api.get(f"/api/providers/{first['id']}/events?limit=1")).json()["events"]] \
        == ["provider.down"]


@pytest.mark.parametrize("query", ["after=-1", "after=x", "limit=0", "limit=1001", "after=9007199254740992"])
async def test_bad_feed_parameters_are_400(api, query):
    response = await api.get(f"/api/events?{query}")
    assert response.code == 400
    assert response.json()["detail"]


async def test_events_of_an_unknown_provider_are_404(api):
    response = await api.get("/api/providers/424242/events")
    assert response.code == 404 and "424242" in response.json()["detail"]


async def test_events_go_with_their_provider_when_it_is_deleted(api, fake_provider, runtime):
    kept, deleted = await add(api, fake_provider), await add(api, fake_provider)
    await probe(api, kept["id"])
    await probe(api, deleted["id"])
    assert (await api.delete(f"/api/providers/{deleted['id']}")).code == 204
    assert [e["provider_id"] for e in (await api.get("/api/events")).json()["events"]] == [kept["id"]]
    assert runtime.conn.execute("SELECT count(*) FROM events WHERE provider_id = ?", (deleted["id"],)).fetchone()[0] \
        == 0


async def test_health_is_not_in_the_backup_and_a_restored_provider_starts_unknown(api, fake_provider, runtime):
    provider = await add(api, fake_provider)
    await probe(api, provider["id"])
    assert (await health(api, provider["id"]))["state"] == "up"
    backup = json.loads(runtime.settings.backup_file.read_text())
    assert all("health" not in record for record in backup["providers"])
    export = (await api.get("/api/admin/providers/export")).json()
    assert all("health" not in record for record in export["providers"])
    assert (await api.post("/api/admin/providers/restore", json=export)).code == 200
    restored = (await api.get(f"/api/providers/{provider['id']}")).json()
    assert restored["health"] == UNKNOWN
    assert restored["last_test"] == export["providers"][0]["last_test"]  # last_test is kept, health is not


async def test_a_result_for_a_provider_deleted_meanwhile_raises_no_event(api, fake_provider, runtime):
    provider = await add(api, fake_provider)
    assert (await api.delete(f"/api/providers/{provider['id']}")).code == 204
    result = {"status": "online", "status_code": 200, "latency_ms": 1.0, "detail": None, "missing_models": None,
              "checked_at": "2026-11-26T10:00:00.000Z"}
    await runtime.inventory.record_probe_results({provider["id"]: result})
    assert (await api.get("/api/events")).json()["events"] == []
