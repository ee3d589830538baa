"""Connectivity tests against a fake provider served by Tornado in the test process, through the
real curl client: requests per type, status classes, timings, missing models, bulk concurrency."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from tornado.tcpserver import TCPServer

from registry.probes import ProbeTarget, probe_request
from support.processes import closed_port
from support.waiting import wait_until

pytestmark = pytest.mark.gen_test(timeout=30)

KEY = "sk-probe-key-0123456789"
KEY_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key")


async def add(api, fake_provider, provider_type="openai", path="/v1", **fields) -> dict:
    body = {"name": f"{provider_type}-{time.monotonic_ns()}", "type": provider_type,
            "base_url": fake_provider.url + path, "api_key": KEY, "models": []}
    body.update(fields)
    body = {k: v for k, v in body.items() if v is not ...}
    response = await api.post("/api/providers", json=body)
    assert response.code == 201, response.body
    return response.json()


async def run_test(api, provider) -> dict:
    response = await api.post(f"/api/providers/{provider['id']}/test")
    assert response.code == 200, response.body
    return response.json()


def assert_timings_ordered(timings: dict) -> None:
    values = [timings[k] for k in ("dns_ms", "connect_ms", "tls_ms", "first_byte_ms", "total_ms")]
    present = [v for v in values if v is not None]
    assert present == sorted(present), timings


@pytest.mark.parametrize("provider_type, path, query, expected_headers", [
    ("openai", "/v1/models", "", {"authorization": f"Bearer {KEY}"}),
    ("anthropic", "/v1/models", "", {"x-api-key": KEY, "anthropic-version": "2023-06-01"}),
    ("gemini", "/v1/models", "", {"x-goog-api-key": KEY}),
    ("azure", "/v1/models", "api-version=2024-10-21", {"api-key": KEY}),
    ("ollama", "/v1/api/tags", "", {"authorization": f"Bearer {KEY}"}),
])
async def test_each_type_sends_its_native_request(api, fake_provider, provider_type, path, query, expected_headers):
    provider = await add(api, fake_provider, provider_type)
    await run_test(api, provider)
    [request] = fake_provider.requests
    assert request.method == "GET"
    assert request.path == path
    assert request.query == query
    for name, value in expected_headers.items():
        assert request.headers[name] == value
    sent_key_headers = {h for h in KEY_HEADERS if h in request.headers}
    assert sent_key_headers == {h for h in KEY_HEADERS if h in expected_headers}


@pytest.mark.parametrize("provider_type", ["openai", "anthropic", "gemini", "azure", "ollama"])
async def test_no_key_header_without_a_key(api, fake_provider, provider_type):
    provider = await add(api, fake_provider, provider_type, api_key=...)
    await run_test(api, provider)
    [request] = fake_provider.requests
    assert not [h for h in KEY_HEADERS if h in request.headers], request.headers


async def test_online_result_shape_and_last_test_persisted_in_listing_and_backup(api, fake_provider, runtime):
    provider = await add(api, fake_provider, models=["model-a", "model-b"])
    result = await run_test(api, provider)
    assert result["status"] == "online"
    assert result["status_code"] == 200
    assert result["detail"] is None
    assert result["missing_models"] == ["model-b"]
    assert result["latency_ms"] > 0
    assert result["checked_at"].endswith("Z")
    assert_timings_ordered(result["timings"])
    assert result["timings"]["first_byte_ms"] is not None
    assert result["timings"]["tls_ms"] is None  # plain http: no TLS phase

    again = await run_test(api, provider)  # a second probe measures a new connection, not a reused one
    assert again["timings"]["connect_ms"] is not None and again["timings"]["dns_ms"] is not None

    stored = (await api.get(f"/api/providers/{provider['id']}")).json()
    assert stored["last_test"] == again
    backup = json.loads(runtime.settings.backup_file.read_text())
    assert backup["providers"][0]["last_test"] == again


@pytest.mark.parametrize("status, expected", [(401, "unauthorized"), (403, "unauthorized"), (500, "error"),
                                              (404, "error"), (429, "error")])
async def test_http_status_classes(api, fake_provider, status, expected):
    fake_provider.answer("/v1/models", status=status, body={"error": "nope"})
    result = await run_test(api, await add(api, fake_provider))
    assert result["status"] == expected
    assert result["status_code"] == status
    assert str(status) in result["detail"]
    assert result["missing_models"] is None


async def test_redirect_is_not_followed_and_names_its_target(api, fake_provider):
    fake_provider.answer("/v1/models", status=302, headers={"Location": "http://elsewhere.example:8080/steal"})
    result = await run_test(api, await add(api, fake_provider))
    assert result["status"] == "error"
    assert result["status_code"] == 302
    assert "elsewhere.example" in result["detail"]
    assert len(fake_provider.requests) == 1


async def test_closed_port_is_offline_without_first_byte(api, fake_provider):
    provider = await add(api, fake_provider)
    await api.patch(f"/api/providers/{provider['id']}", json={"base_url": f"http://127.0.0.1:{closed_port()}/v1"})
    result = await run_test(api, provider)
    assert result["status"] == "offline"
    assert result["status_code"] is None
    assert "refused" in result["detail"]
    assert result["latency_ms"] >= 0
    assert result["timings"]["first_byte_ms"] is None
    assert result["missing_models"] is None


@pytest.mark.env(BACKEND_REQUEST_TIMEOUT_SECONDS="1")
async def test_slow_provider_times_out_after_the_configured_timeout(api, fake_provider):
    fake_provider.answer("/v1/models", body={"data": []}, delay=3)
    started = time.monotonic()
    result = await run_test(api, await add(api, fake_provider))
    assert time.monotonic() - started < 2.5
    assert result["status"] == "offline"
    assert result["detail"] == "timeout after 1.0 s"
    assert result["latency_ms"] >= 900
    assert result["timings"]["connect_ms"] is not None  # the TCP connect happened before the timeout
    assert result["timings"]["first_byte_ms"] is None
    assert_timings_ordered(result["timings"])


async def test_tls_failure_is_offline(api, fake_provider, io_loop):
    class NotTls(TCPServer):
        async def handle_stream(self, stream, address):
            await stream.write(b"HTTP/1.1 400 Bad Request\r\n\r\nthis port does not speak TLS\r\n")
            stream.close()

    server = NotTls()
    port = closed_port()
    server.listen(port, "127.0.0.1")
    try:
        provider = await add(api, fake_provider)
        await api.patch(f"/api/providers/{provider['id']}", json={"base_url": f"https://127.0.0.1:{port}/v1"})
        result = await run_test(api, provider)
    finally:
        server.stop()
    assert result["status"] == "offline"
    assert "TLS" in result["detail"]
    assert result["status_code"] is None
    assert result["timings"]["connect_ms"] is not None
    assert result["timings"]["tls_ms"] is None
    assert result["timings"]["first_byte_ms"] is None


@pytest.mark.parametrize("body", [b"<html>not json</html>", b'{"data": "not a list"}', b"[1, 2]", b"null"])
async def test_answer_without_a_model_list_is_online_with_null_missing_models(api, fake_provider, body):
    fake_provider.answer("/v1/models", body=body)
    result = await run_test(api, await add(api, fake_provider, models=["m"]))
    assert result["status"] == "online"
    assert result["missing_models"] is None


async def test_huge_body_is_capped_not_parsed(api, fake_provider):
    fake_provider.answer("/v1/models", body=b'{"data": [' + b'{"id": "x"},' * 600_000 + b'{"id": "y"}]}')
    result = await run_test(api, await add(api, fake_provider, models=["y"]))
    assert result["status"] == "online"
    assert result["missing_models"] is None
    assert (await api.get("/ping")).code == 200


@pytest.mark.parametrize("provider_type, path, answer, configured, missing", [
    ("openai", "/v1/models", {"data": [{"id": "gpt-4o"}, {"id": "gpt-4o-mini"}]}, ["gpt-4o", "o3"], ["o3"]),
    ("anthropic", "/v1/models", {"data": [{"id": "claude-sonnet-4"}]}, ["claude-sonnet-4"], []),
    ("azure", "/v1/models", {"data": [{"id": "gpt-4o"}]}, ["gpt-4o", "gpt-35"], ["gpt-35"]),
    ("gemini", "/v1/models", {"models": [{"name": "models/gemini-2.0-flash"}]}, ["gemini-2.0-flash", "gemini-x"],
     ["gemini-x"]),
    ("ollama", "/v1/api/tags", {"models": [{"name": "llama3:8b"}]}, ["llama3:8b", "phi3"], ["phi3"]),
])
async def test_missing_models_per_type(api, fake_provider, provider_type, path, answer, configured, missing):
    fake_provider.answer(path, body=answer)
    result = await run_test(api, await add(api, fake_provider, provider_type, models=configured))
    assert result["missing_models"] == missing


async def test_undecryptable_key_is_an_error_result_not_a_500(api, fake_provider, add_foreign_key_provider):
    provider_id = await add_foreign_key_provider(base_url=fake_provider.url + "/v1")
    result = await run_test(api, {"id": provider_id})
    assert result["status"] == "error"
    assert "cannot be decrypted" in result["detail"]
    assert result["status_code"] is None
    assert set(result["timings"].values()) == {None}
    assert fake_provider.requests == []


async def test_inactive_provider_can_be_tested(api, fake_provider):
    result = await run_test(api, await add(api, fake_provider, is_active=False))
    assert result["status"] == "online"


async def test_test_of_unknown_provider_is_404(api):
    response = await api.post("/api/providers/404/test")
    assert response.code == 404
    assert response.json()["detail"]


@pytest.mark.env(BACKEND_TEST_CONCURRENCY="3")
async def test_bulk_test_probes_active_providers_within_the_concurrency_bound(api, fake_provider, runtime):
    fake_provider.answer("/v1/models", body={"data": [{"id": "model-a"}]}, delay=0.2)
    active = [await add(api, fake_provider, models=["model-a"]) for _ in range(8)]
    await add(api, fake_provider, is_active=False)
    response = await api.post("/api/providers/test")
    assert response.code == 200
    results = response.json()["results"]
    assert sorted(r["id"] for r in results) == [p["id"] for p in active]
    assert {r["name"] for r in results} == {p["name"] for p in active}
    assert all(r["status"] == "online" and r["missing_models"] == [] for r in results)
    assert fake_provider.max_in_flight == 3
    assert len(fake_provider.requests) == 8
    listed = (await api.get("/api/providers?is_active=true")).json()
    assert all(p["last_test"]["status"] == "online" for p in listed)
    backup = json.loads(runtime.settings.backup_file.read_text())
    assert sum(p["last_test"] is not None for p in backup["providers"]) == 8


async def test_bulk_test_with_no_active_providers_returns_empty_results(api):
    response = await api.post("/api/providers/test")
    assert response.code == 200
    assert response.json() == {"results": []}


async def test_ping_answers_while_a_bulk_test_is_running(api, fake_provider):
    fake_provider.answer("/v1/models", body={"data": []}, delay=1.0)
    for _ in range(3):
        await add(api, fake_provider)
    bulk = asyncio.ensure_future(api.post("/api/providers/test"))
    await wait_until(lambda: fake_provider.requests, message="the bulk test's first probe")
    started = time.monotonic()
    ping = await api.get("/ping")
    ping_seconds = time.monotonic() - started
    assert ping.code == 200
    assert not bulk.done()
    assert ping_seconds < 0.5
    assert (await bulk).code == 200


async def test_non_ascii_path_and_query_are_percent_encoded(api, fake_provider):
    provider = await add(api, fake_provider, path="/vé", base_url=fake_provider.url + "/vé?tenant=ü")
    result = await run_test(api, provider)
    assert result["status"] == "online"
    [request] = fake_provider.requests
    assert request.path == "/v%C3%A9/models"
    assert request.query == "tenant=%C3%BC"


@pytest.mark.parametrize("base_url, expected", [
    ("https://bücher.example:8443/v1", "https://xn--bcher-kva.example:8443/v1/models?api-version=2024-10-21"),
    ("http://[::1]:8080/openai/", "http://[::1]:8080/openai/models?api-version=2024-10-21"),
    ("https://EXAMPLE.com/v1?tenant=a", "https://example.com/v1/models?tenant=a&api-version=2024-10-21"),
])
def test_probe_urls_are_ascii_with_idna_hosts(base_url, expected):
    assert probe_request(ProbeTarget("azure", base_url.rstrip("/"), "k"))[0] == expected


@pytest.mark.env(BACKEND_TEST_CONCURRENCY="10")
async def test_a_single_test_never_waits_behind_a_bulk_test_for_a_transfer_slot(api, fake_provider):
    fake_provider.answer("/hung/v1/models", delay=5)  # past the 2 s probe timeout: every bulk slot is held
    for i in range(10):
        await api.post("/api/providers", json={"name": f"Hung {i}", "base_url": fake_provider.url + "/hung/v1"})
    single = (await api.post("/api/providers", json={"name": "Single", "base_url": fake_provider.url + "/v1",
                                                     "is_active": False})).json()
    bulk = asyncio.ensure_future(api.post("/api/providers/test"))
    await wait_until(lambda: fake_provider.in_flight == 10, message="every bulk slot held")
    result = (await api.post(f"/api/providers/{single['id']}/test")).json()
    assert result["status"] == "online"
    assert not bulk.done()  # answered while every bulk probe was still waiting on its upstream
    assert fake_provider.in_flight == 10
    assert {r["status"] for r in (await bulk).json()["results"]} == {"offline"}


# -- what the upstream said --------------------------------------------------------------------------

@pytest.mark.parametrize("status, reason, body, message", [
    (400, "Bad Request", {"error": {"message": "No connected db.", "type": "invalid_request_error"}},
     "No connected db."),
    (401, "Unauthorized", {"error": "invalid x-api-key"}, "invalid x-api-key"),
    (429, "Too Many Requests", {"message": "Rate limit reached for requests"}, "Rate limit reached for requests"),
    (422, "Unprocessable Entity", {"detail": "model is required"}, "model is required"),
    (500, "Internal Server Error", {"error": {"code": 500, "message": "line one\nline\ttwo\x00"}},
     "line onelinetwo"),
])
async def test_a_non_2xx_detail_carries_the_upstreams_own_message(api, fake_provider, status, reason, body, message):
    fake_provider.answer("/v1/models", status=status, body=body)
    result = await run_test(api, await add(api, fake_provider))
    assert result["detail"] == f"HTTP {status} {reason}: {message}"
    assert result["status"] == ("unauthorized" if status == 401 else "error")


@pytest.mark.parametrize("body", [None, "<html>oops</html>", {"error": {"code": 7}}, ["a list"], {"detail": [1]}])
async def test_without_a_usable_message_the_detail_is_the_status_alone(api, fake_provider, body):
    fake_provider.answer("/v1/models", status=503, body=body)
    result = await run_test(api, await add(api, fake_provider))
    assert result["detail"] == "HTTP 503 Service Unavailable"


async def test_an_upstream_message_is_cut_to_200_characters_and_never_quotes_the_key(api, fake_provider):
    echoed = f"Incorrect API key provided: {KEY}. You can find your key at https://example.com/keys. " + "x" * 300
    fake_provider.answer("/v1/models", status=401, body={"error": {"message": echoed}})
    result = await run_test(api, await add(api, fake_provider))
    assert result["detail"].startswith("HTTP 401 Unauthorized: Incorrect API key provided: …. You can find")
    assert len(result["detail"]) <= 200
    for start in range(len(KEY) - 7):
        assert KEY[start:start + 8] not in result["detail"]
    partial = KEY[3:15]  # a piece of the key, not the whole of it, is redacted too
    fake_provider.answer("/v1/models", status=400, body={"error": f"bad key ...{partial}..."})
    assert partial not in (await run_test(api, await add(api, fake_provider)))["detail"]


@pytest.mark.parametrize("provider_type, path, body, hint", [
    ("gemini", "/v1/models", {"data": [{"id": "gpt-4o"}]},
     "the answer is an OpenAI-style model list; is the type openai?"),
    ("ollama", "/v1/api/tags", {"object": "list", "data": [{"id": "llama3"}]},
     "the answer is an OpenAI-style model list; is the type openai?"),
    ("openai", "/v1/models", {"models": [{"name": "models/gemini-1.5-pro"}]},
     "the answer is a Gemini-style model list; is the type gemini?"),
    ("anthropic", "/v1/models", {"models": [{"name": "llama3:8b"}]},
     "the answer is an Ollama-style model list; is the type ollama?"),
])
async def test_a_model_list_of_another_types_shape_is_online_with_a_hint(api, fake_provider, provider_type, path,
                                                                          body, hint):
    fake_provider.answer(path, body=body)
    result = await run_test(api, await add(api, fake_provider, provider_type, models=["m"]))
    assert (result["status"], result["missing_models"], result["detail"]) == ("online", None, hint)


async def test_an_answer_with_no_model_list_at_all_is_online_without_a_hint(api, fake_provider):
    fake_provider.answer("/v1/models", body={"status": "ok"})
    result = await run_test(api, await add(api, fake_provider, models=["m"]))
    assert (result["status"], result["missing_models"], result["detail"]) == ("online", None, None)


@pytest.mark.parametrize("key, echoed, kept", [
    ("abc1234", "Received API Key = abc1234, Key Hash none", "Received API Key = …, Key Hash none"),
    ("test", "testing the key test: refused", "testing the key …: refused"),  # whole occurrences only
    ("ollama", "ollama is not a key; OLLAMA!", "… is not a key; …!"),
])
async def test_a_key_shorter_than_eight_characters_is_redacted_where_it_stands_whole(api, fake_provider, key,
                                                                                       echoed, kept):
    fake_provider.answer("/v1/models", status=401, body={"error": echoed})
    result = await run_test(api, await add(api, fake_provider, api_key=key))
    assert result["detail"] == f"HTTP 401 Unauthorized: {kept}"


async def test_a_percent_encoded_key_in_an_upstream_message_is_redacted_too(api, fake_provider):
    key = "sk-ab/cd+ef/gh+ij/kl?mn&URLENC"
    encoded = "sk-ab%2Fcd%2Bef%2Fgh%2Bij%2Fkl%3Fmn%26URLENC"
    fake_provider.answer("/v1/models", status=401, body={"error": f"bad key {encoded}"})
    result = await run_test(api, await add(api, fake_provider, api_key=key))
    assert "%2F" not in result["detail"] and "URLENC" not in result["detail"]
