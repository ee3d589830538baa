"""Schemathesis against the live server's /openapi.json: no 5xx, and every response matches what the
document says (status codes, content types, headers, bodies). Deterministic and bounded.

Every outbound probe must stay on loopback, so the operations that probe run against a second
server whose providers all point at a fake upstream, and a schema-valid `base_url` in a generated
body is pointed there too (invalid ones are left alone: they must still be rejected).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from support.api import http_json
from support.fake_provider import start_threaded_fake_provider
from support.processes import kill_server_process, start_server_process
from registry.schemas import provider_create_validator

TOKEN = "fuzz-token-0123456789"
PROBING = r"^.*(/test|/test-connection|/models/discover|/models/sync)$"
FUZZ_SETTINGS = settings(max_examples=30, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))


def _start(tmp_path_factory, name: str, extra_env: dict | None = None):
    env = {"BACKEND_API_KEY_SECRET": "fuzz-secret", "BACKEND_ADMIN_TOKEN": TOKEN, **(extra_env or {})}
    return start_server_process(env, tmp_path_factory.mktemp(name))


@pytest.fixture(scope="module")
def crud_server(tmp_path_factory):
    server = _start(tmp_path_factory, "fuzz-crud")
    yield server
    kill_server_process(server)


@pytest.fixture(scope="module")
def fake_upstream():
    fake, stop = start_threaded_fake_provider()
    yield fake
    stop()


@pytest.fixture(scope="module")
def probe_server(tmp_path_factory, fake_upstream):
    server = _start(tmp_path_factory, "fuzz-probe", {"BACKEND_REQUEST_TIMEOUT_SECONDS": "2"})
    for index, provider_type in enumerate(["openai", "anthropic", "gemini", "azure", "ollama"]):
        status, _ = http_json("POST", server.url + "/api/providers", {
            "name": f"fake-{index}", "type": provider_type, "base_url": fake_upstream.url + "/v1",
            "api_key": "sk-fuzz-0123456789abc", "models": ["model-a"]}, token=TOKEN)
        assert status == 201
    yield server
    kill_server_process(server)


@pytest.fixture(scope="module")
def crud_schema(crud_server):
    return schemathesis.openapi.from_url(crud_server.url + "/openapi.json")


@pytest.fixture(scope="module")
def probe_schema(probe_server):
    return schemathesis.openapi.from_url(probe_server.url + "/openapi.json")


crud = schemathesis.pytest.from_fixture("crud_schema").exclude(path_regex=PROBING)
probing = schemathesis.pytest.from_fixture("probe_schema").include(path_regex=PROBING)


class BearerToken:
    """The admin token, given to schemathesis as auth (not as a fixed header), so that the cases it
    builds without credentials really go out without them."""

    def get(self, case, context):
        return TOKEN

    def set(self, case, token, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


crud.auth()(BearerToken)
probing.auth()(BearerToken)


@crud.parametrize()
@FUZZ_SETTINGS
def test_crud_and_admin_operations_conform(case, crud_server):
    case.call_and_validate(base_url=crud_server.url, timeout=30)


@probing.parametrize()
@FUZZ_SETTINGS
def test_probing_operations_conform(case, probe_server, fake_upstream):
    if provider_create_validator.is_valid(case.body):
        case.body["base_url"] = fake_upstream.url + "/v1"
    case.call_and_validate(base_url=probe_server.url, timeout=30)
    assert all(r.path.startswith("/v1/") for r in fake_upstream.requests)
