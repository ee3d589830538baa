"""Admin token, what stays public, the OpenAPI document and the offline Swagger UI, log hygiene."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from jsonschema import Draft202012Validator

from registry import schemas
from handlers import AccessLog, default_handlers
from handlers.docs import build_openapi

pytestmark = pytest.mark.gen_test(timeout=30)

TOKEN = "admin-token-for-tests-0123456789"
with_token = pytest.mark.env(BACKEND_ADMIN_TOKEN=TOKEN)

API_CALLS = [
    ("GET", "/api/providers", None),
    ("POST", "/api/providers", b'{"name": "x", "base_url": "https://x.example.com"}'),
    ("GET", "/api/providers/1", None),
    ("PATCH", "/api/providers/1", b"{}"),
    ("DELETE", "/api/providers/1", None),
    ("POST", "/api/providers/1/test", b""),
    ("POST", "/api/providers/test", b""),
    ("POST", "/api/providers/test-connection", b"{}"),
    ("GET", "/api/providers/1/tests", None),
    ("GET", "/api/providers/1/models/discover", None),
    ("POST", "/api/providers/1/models/sync", b""),
    ("GET", "/api/admin/providers/export", None),
    ("POST", "/api/admin/providers/restore", b""),
    ("GET", "/api/does-not-exist", None),
    ("GET", "/api", None),
    ("PUT", "/api/providers", b"{}"),
    ("POST", "/api/providers", b"{not json"),
    ("POST", "/api/providers", b'{"name": ""}'),
]


def assert_401(response) -> None:
    assert response.code == 401, response.body
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "token" in response.json()["detail"]


@with_token
@pytest.mark.parametrize("method, path, body", API_CALLS)
async def test_every_api_call_without_the_token_is_401_before_anything_else(api, method, path, body):
    assert_401(await api.request(method, path, body=body, token=None))
    assert_401(await api.request(method, path, body=body, token="wrong-token"))
    assert_401(await api.request(method, path, body=body, headers={"Authorization": TOKEN}, token=None))


@with_token
async def test_oversized_body_without_token_is_401_not_413(api):
    assert_401(await api.request("POST", "/api/providers", body=b"x" * (2 * 1024 * 1024), token=None))


@with_token
async def test_the_right_token_is_accepted_in_any_scheme_case(api):
    assert (await api.get("/api/providers")).code == 200
    response = await api.get("/api/providers", headers={"Authorization": f"bearer {TOKEN}"}, token=None)
    assert response.code == 200


@with_token
@pytest.mark.parametrize("path", ["/ping", "/openapi.json", "/docs", "/docs/static/swagger-ui.css"])
async def test_public_paths_need_no_token(api, path):
    assert (await api.get(path, token=None)).code == 200


async def test_without_a_configured_token_the_api_is_open(api):
    assert (await api.get("/api/providers", token=None)).code == 200


# -- OpenAPI and docs -------------------------------------------------------------------------------

def test_every_schema_is_a_valid_draft_2020_12_schema():
    for schema in (schemas.PROVIDER_CREATE, schemas.PROVIDER_UPDATE, schemas.PROVIDER, schemas.TEST_RESULT,
                   schemas.BACKUP_DOCUMENT, schemas.ERROR):
        Draft202012Validator.check_schema(schema)


def resolved(value, components):
    """`value` with every `$ref` to a component replaced by the component itself."""
    if isinstance(value, dict):
        if "$ref" in value:  # with siblings such as a default
            target = resolved(components[value["$ref"].rsplit("/", 1)[1]], components)
            return {**target, **{k: v for k, v in value.items() if k != "$ref"}}
        return {k: resolved(v, components) for k, v in value.items()}
    if isinstance(value, list):
        return [resolved(v, components) for v in value]
    return value


def test_openapi_is_built_from_the_validators_schemas():
    components = build_openapi(tuple(default_handlers))["components"]["schemas"]
    assert resolved(components["ProviderCreate"], components) == schemas.provider_create_validator.schema
    assert resolved(components["ProviderUpdate"], components) == schemas.provider_update_validator.schema
    assert resolved(components["BackupDocument"], components) == schemas.backup_document_validator.schema
    assert resolved(components["Provider"], components) == schemas.PROVIDER
    assert resolved(components["WebhookCreate"], components) == schemas.webhook_create_validator.schema
    assert resolved(components["WebhookUpdate"], components) == schemas.webhook_update_validator.schema


def test_every_operation_has_an_operation_id_and_a_tag_and_shared_schemas_are_referenced():
    document = build_openapi(tuple(default_handlers))
    ids = [op["operationId"] for item in document["paths"].values() for method, op in item.items()
           if method != "parameters"]
    assert len(ids) == len(set(ids)) == 32
    assert all(op["tags"] for item in document["paths"].values() for method, op in item.items()
               if method != "parameters")
    components = document["components"]["schemas"]
    assert components["Provider"]["properties"]["last_test"] == {
        "oneOf": [{"$ref": "#/components/schemas/TestResult"}, {"type": "null"}]}
    assert components["BackupDocument"]["properties"]["providers"]["items"] == {
        "$ref": "#/components/schemas/BackupProvider"}
    assert components["TestResult"]["properties"]["timings"] == {"$ref": "#/components/schemas/Timings"}
    assert components["TestResult"]["properties"]["checked_at"]["format"] == "date-time"
    assert components["Provider"]["properties"]["created_at"]["format"] == "date-time"
    restore = document["paths"]["/api/admin/providers/restore"]["post"]["responses"]["200"]
    assert restore["content"]["application/json"]["schema"] == {"oneOf": [
        {"$ref": "#/components/schemas/RestoreResult"}, {"$ref": "#/components/schemas/RestorePreview"}]}
    for schema in components.values():
        Draft202012Validator.check_schema(schema)


async def test_openapi_document_lists_every_route_with_bearer_security(api, app):
    response = await api.get("/openapi.json")
    assert response.code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert "BACKEND_ADMIN_TOKEN" in scheme["description"]
    expected = {"/ping", "/api/providers", "/api/providers/{provider_id}", "/api/providers/{provider_id}/test",
                "/api/providers/test", "/api/providers/test-connection", "/api/providers/{provider_id}/tests",
                "/api/providers/{provider_id}/models/discover", "/api/providers/{provider_id}/models/sync",
                "/api/admin/providers/export", "/api/admin/providers/restore",
                "/api/providers/{provider_id}/credentials", "/api/resolve", "/api/tokens", "/api/tokens/self",
                "/api/tokens/{token_id}", "/api/audit", "/api/providers/{provider_id}/events", "/api/events",
                "/api/webhooks", "/api/webhooks/{webhook_id}", "/api/webhooks/{webhook_id}/ping",
                "/api/webhooks/{webhook_id}/deliveries", "/metrics"}
    assert set(document["paths"]) == expected
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            if path.startswith("/api/"):
                assert "401" in operation["responses"], (method, path)
            assert any(code.startswith("2") for code in operation["responses"]), (method, path)
    assert document["paths"]["/ping"]["get"]["security"] == []


async def test_docs_page_is_served_from_local_files_only(api):
    response = await api.get("/docs")
    assert response.code == 200
    page = response.body.decode()
    assert response.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "http://" not in page and "https://" not in page
    assert "<script>" not in page  # no inline script: the CSP forbids it
    for asset in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css", "/docs/init.js"):
        assert asset in page
        served = await api.get(asset)
        assert served.code == 200 and len(served.body) > 30, asset
    assert b"/openapi.json" in (await api.get("/docs/init.js")).body


# -- logs -------------------------------------------------------------------------------------------

async def test_no_key_in_any_log_line_through_create_update_test_and_restore(api, fake_provider, caplog, access_log):
    caplog.set_level(logging.DEBUG)
    key = "sk-LOGGED-NEVER-5f4e3d2c1b0a"
    created = (await api.post("/api/providers", json={
        "name": "Logged", "base_url": fake_provider.url + "/v1", "api_key": key})).json()
    await api.patch(f"/api/providers/{created['id']}", json={"api_key": key + "2"})
    await api.patch(f"/api/providers/{created['id']}", json={"api_key": key})
    await api.post(f"/api/providers/{created['id']}/test")
    fake_provider.answer("/v1/models", status=500)
    await api.post("/api/providers/test")
    await api.post("/api/providers/test-connection", json={"name": "t", "base_url": fake_provider.url, "api_key": key})
    await api.post("/api/providers", json={"name": "Bad", "base_url": "nope", "api_key": key + "\n"})
    document = (await api.get("/api/admin/providers/export")).json()
    await api.post("/api/admin/providers/restore?dry_run=true", json=document)
    await api.post("/api/admin/providers/restore", json=document)
    assert fake_provider.requests[0].headers["authorization"] == f"Bearer {key}"
    lines = access_log() + [record.getMessage() + (record.exc_text or "") for record in caplog.records]
    assert any("POST /api/admin/providers/restore" in line for line in lines)
    assert all(key not in line for line in lines)
    assert all(document["providers"][0]["api_key"] not in line for line in lines)


async def test_access_log_lines_carry_status_method_path_duration_and_request_id(api, access_log):
    response = await api.get("/api/providers?q=secret-query", headers={"X-Request-Id": "trace-abc-123"})
    assert response.headers["X-Request-Id"] == "trace-abc-123"
    generated = await api.get("/api/nope")
    first, second = access_log()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO provider_registry\.access: "
                        r"200 GET /api/providers \d+\.\dms id=trace-abc-123", first), first
    assert "secret-query" not in first  # query strings are not logged
    assert second.endswith(f"id={generated.headers['X-Request-Id']}") and " WARNING " in second and " 404 " in second


def test_access_log_writes_in_batches_and_on_errors():
    class Request:
        method, path = "GET", "/ping"

        def request_time(self):
            return 0.001

    class Handler:
        request, request_id = Request(), "r1"

        def __init__(self, status):
            self.status = status

        def get_status(self):
            return self.status

    stream = io.StringIO()
    log = AccessLog(stream, batch_lines=3)
    log(Handler(200))
    log(Handler(200))
    assert stream.getvalue() == ""
    log(Handler(200))
    assert len(stream.getvalue().splitlines()) == 3
    log(Handler(503))  # errors are written at once
    assert len(stream.getvalue().splitlines()) == 4 and " ERROR " in stream.getvalue().splitlines()[-1]
    log(Handler(200))
    log.flush()
    assert len(stream.getvalue().splitlines()) == 5


async def test_unexpected_error_is_a_generic_500_without_details(api, runtime, caplog):
    runtime.conn.execute("DROP TABLE probe_results")  # sabotage: the history query now fails
    created = (await api.post("/api/providers", json={"name": "x", "base_url": "https://x.example.com"})).json()
    response = await api.get(f"/api/providers/{created['id']}/tests")
    assert response.code == 500
    body = response.json()
    assert body == {"detail": "Internal server error; the server log has the details."}
    assert "probe_results" not in json.dumps(body)
    assert any("Traceback" in (r.exc_text or "") or r.exc_info for r in caplog.records)
