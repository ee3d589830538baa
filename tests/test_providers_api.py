"""CRUD, listing, validation and the error table of the HTTP API (README), through a real server."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.gen_test


def assert_error(response, status: int, detail_contains: str = "") -> dict:
    assert response.code == status, response.body
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert detail_contains.lower() in body["detail"].lower()
    return body


async def create(api, body) -> dict:
    response = await api.post("/api/providers", json=body)
    assert response.code == 201, response.body
    return response.json()


# -- create ---------------------------------------------------------------------------------------

async def test_create_returns_201_location_and_the_provider(api, provider_body):
    response = await api.post("/api/providers", json=provider_body(name="  OpenAI  ",
                                                                      base_url="https://api.openai.com/v1/"))
    assert response.code == 201
    created = response.json()
    assert response.headers["Location"] == f"/api/providers/{created['id']}"
    assert created["name"] == "OpenAI"
    assert created["base_url"] == "https://api.openai.com/v1"
    assert created["type"] == "openai"
    assert created["is_active"] is True
    assert created["models"] == ["model-a", "model-b"]
    assert created["has_api_key"] is True
    assert created["api_key_preview"] == "…cdef"
    assert created["last_test"] is None
    assert "api_key" not in created
    assert created["created_at"] == created["updated_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", created["created_at"])


async def test_create_applies_defaults(api):
    created = await create(api, {"name": "Local", "base_url": "http://127.0.0.1:11434"})
    assert created["type"] == "openai"
    assert created["models"] == []
    assert created["is_active"] is True
    assert created["has_api_key"] is False
    assert created["api_key_preview"] is None


@pytest.mark.parametrize("key, preview", [
    ("sk-0123456789", "…6789"),  # 13 characters
    ("abcdefghijkl", "…ijkl"),   # exactly 12
    ("abcdefghijk", "…"),        # 11: too short to show any of it
    ("x", "…"),
])
async def test_api_key_preview_shows_last_four_only_for_keys_of_twelve_or_more(api, provider_body, key, preview):
    created = await create(api, provider_body(api_key=key))
    assert created["api_key_preview"] == preview


@pytest.mark.parametrize("provider_type", ["openai", "anthropic", "gemini", "azure", "ollama"])
async def test_every_provider_type_is_accepted(api, provider_body, provider_type):
    assert (await create(api, provider_body(type=provider_type)))["type"] == provider_type


async def test_duplicate_name_differing_in_case_is_409(api, provider_body):
    await create(api, provider_body(name="Straße AI"))
    response = await api.post("/api/providers", json=provider_body(name="  STRASSE ai "))
    assert_error(response, 409, "already exists")


async def test_name_may_be_reused_after_delete(api, provider_body):
    first = await create(api, provider_body(name="Reusable"))
    assert (await api.delete(f"/api/providers/{first['id']}")).code == 204
    second = await create(api, provider_body(name="reusable"))
    assert second["id"] > first["id"]


# -- validation (422) -----------------------------------------------------------------------------

@pytest.mark.parametrize("fields, path", [
    ({"name": ""}, "/name"),
    ({"name": "   "}, "/name"),
    ({"name": "x" * 101}, "/name"),
    ({"name": 5}, "/name"),
    ({"name": ...}, "/name"),
    ({"base_url": ...}, "/base_url"),
    ({"base_url": "ftp://example.com"}, "/base_url"),
    ({"base_url": "example.com/v1"}, "/base_url"),
    ({"base_url": "https://"}, "/base_url"),
    ({"base_url": "https://user:pw@example.com"}, "/base_url"),
    ({"base_url": "https://example.com/v1#frag"}, "/base_url"),
    ({"base_url": "https://exa mple.com"}, "/base_url"),
    ({"base_url": "https://example.com:99999"}, "/base_url"),
    ({"base_url": "https://example.com/" + "a" * 2040}, "/base_url"),
    ({"type": "mistral"}, "/type"),
    ({"api_key": ""}, "/api_key"),
    ({"api_key": "k" * 4097}, "/api_key"),
    ({"api_key": 12345}, "/api_key"),
    ({"api_key": "sk-abc\r\nX-Injected: yes"}, "/api_key"),
    ({"api_key": "sk-tab\tinside"}, "/api_key"),
    ({"api_key": "ключ-0123456789"}, "/api_key"),
    ({"models": "gpt-4"}, "/models"),
    ({"models": ["a", "a"]}, "/models"),
    ({"models": [""]}, "/models/0"),
    ({"models": ["m" * 201]}, "/models/0"),
    ({"models": [f"m{i}" for i in range(1001)]}, "/models"),
    ({"is_active": "yes"}, "/is_active"),
    ({"unknown_field": 1}, "/unknown_field"),
    ({"id": 7}, "/id"),
])
async def test_invalid_create_body_is_422_with_the_field_path(api, provider_body, fields, path):
    response = await api.post("/api/providers", json=provider_body(**fields))
    body = assert_error(response, 422)
    assert path in [e["path"] for e in body["errors"]], body
    assert all(e["message"] for e in body["errors"])
    listing = await api.get("/api/providers")
    assert listing.json() == []


async def test_all_violations_are_reported_at_once(api):
    response = await api.post("/api/providers", json={"name": "", "base_url": "nope", "is_active": 1})
    paths = {e["path"] for e in assert_error(response, 422)["errors"]}
    assert paths == {"/name", "/base_url", "/is_active"}


async def test_a_rejected_api_key_is_never_echoed(api, provider_body):
    secret = "sk-LEAK-with-a-newline\n0123456789"
    response = await api.post("/api/providers", json=provider_body(api_key=secret))
    assert_error(response, 422)
    assert b"LEAK" not in response.body


@pytest.mark.parametrize("url", ["http://localhost:8080", "https://[::1]:8443/v1", "HTTPS://API.EXAMPLE.COM/v1",
                                 "http://10.0.0.5/openai/v1?tenant=a"])
async def test_valid_base_urls_are_accepted(api, provider_body, url):
    assert (await create(api, provider_body(base_url=url)))["base_url"] == url


# -- malformed requests (400, 413) ----------------------------------------------------------------

@pytest.mark.parametrize("body, detail", [
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"\xff\xfe{}", "UTF-8"),
    (b"[1, 2]", "JSON object"),
    (b'"text"', "JSON object"),
    (b'{"name": NaN}', "not valid JSON"),
    (b'{"name": "\\udc00", "base_url": "https://x.example.com"}', "lone surrogate"),
    (b'{"name": "ok", "base_url": "https://x.example.com", "models": ["\\ud800x"]}', "lone surrogate"),
])
async def test_malformed_body_is_400(api, body, detail):
    assert_error(await api.request("POST", "/api/providers", body=body), 400, detail)


async def test_malformed_patch_body_is_400(api, provider_body):
    created = await create(api, provider_body())
    assert_error(await api.request("PATCH", f"/api/providers/{created['id']}", body=b"[]"), 400, "JSON object")


async def test_body_over_one_mebibyte_is_413(api, provider_body):
    body = json.dumps(provider_body(models=["x" * 100] * 11000)).encode()
    assert len(body) > 1024 * 1024
    assert_error(await api.request("POST", "/api/providers", body=body), 413, "1 MiB")
    assert (await api.get("/api/providers")).json() == []


@pytest.mark.parametrize("query, detail", [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
    ("offset=-1", "offset"), ("offset=x", "offset"), ("offset=99999999999999999999", "offset"),
    ("is_active=yes", "is_active"), ("is_active=1", "is_active"),
    ("type=mistral", "type"),
])
async def test_bad_query_parameter_is_400(api, query, detail):
    assert_error(await api.get(f"/api/providers?{query}"), 400, detail)


# -- listing ----------------------------------------------------------------------------------------

async def test_list_is_ordered_by_id_with_total_count(api, provider_body):
    ids = [(await create(api, provider_body()))["id"] for _ in range(5)]
    response = await api.get("/api/providers")
    assert [p["id"] for p in response.json()] == ids
    assert response.headers["X-Total-Count"] == "5"


async def test_list_paging_with_limit_and_offset(api, provider_body):
    ids = [(await create(api, provider_body()))["id"] for _ in range(5)]
    response = await api.get("/api/providers?limit=2&offset=1")
    assert [p["id"] for p in response.json()] == ids[1:3]
    assert response.headers["X-Total-Count"] == "5"
    past_the_end = await api.get("/api/providers?offset=10")
    assert past_the_end.json() == [] and past_the_end.headers["X-Total-Count"] == "5"


async def test_list_filters_by_active_type_and_name(api, provider_body):
    await create(api, provider_body(name="OpenAI prod", type="openai"))
    await create(api, provider_body(name="Anthropic", type="anthropic", is_active=False))
    await create(api, provider_body(name="openai staging", type="openai", is_active=False))

    def names(response):
        return [p["name"] for p in response.json()]

    assert names(await api.get("/api/providers?is_active=false")) == ["Anthropic", "openai staging"]
    assert names(await api.get("/api/providers?type=openai")) == ["OpenAI prod", "openai staging"]
    response = await api.get("/api/providers?q=OPENAI&is_active=true")
    assert names(response) == ["OpenAI prod"]
    assert response.headers["X-Total-Count"] == "1"
    assert names(await api.get("/api/providers?unknown=1")) == ["OpenAI prod", "Anthropic", "openai staging"]


async def test_name_filter_folds_unicode_case_and_treats_wildcards_literally(api, provider_body):
    await create(api, provider_body(name="Groß Provider"))
    await create(api, provider_body(name="100% uptime_llm"))
    await create(api, provider_body(name="plain"))

    async def names(q):
        return [p["name"] for p in (await api.get(f"/api/providers?q={q}")).json()]

    assert await names("GROSS") == ["Groß Provider"]
    assert await names("%25") == ["100% uptime_llm"]
    assert await names("_") == ["100% uptime_llm"]
    assert await names("%25%25") == []


# -- get, patch, delete -----------------------------------------------------------------------------

async def test_get_one_and_unknown_id_is_404(api, provider_body):
    created = await create(api, provider_body())
    assert (await api.get(f"/api/providers/{created['id']}")).json() == created
    assert_error(await api.get("/api/providers/999"), 404, "does not exist")
    assert_error(await api.get("/api/providers/99999999999999999999999999"), 404)
    assert_error(await api.get("/api/providers/abc"), 404)


async def test_patch_changes_only_given_fields_and_bumps_updated_at(api, provider_body):
    created = await create(api, provider_body(name="Before", models=["a"]))
    response = await api.patch(f"/api/providers/{created['id']}",
                               json={"name": "After", "is_active": False, "base_url": "http://127.0.0.1:9/v2/"})
    assert response.code == 200
    updated = response.json()
    assert updated["name"] == "After"
    assert updated["is_active"] is False
    assert updated["base_url"] == "http://127.0.0.1:9/v2"
    assert updated["models"] == ["a"]
    assert updated["api_key_preview"] == created["api_key_preview"]
    assert updated["created_at"] == created["created_at"]
    assert updated["updated_at"] > created["updated_at"]
    assert (await api.get(f"/api/providers/{created['id']}")).json() == updated


async def test_empty_patch_is_200_and_changes_nothing(api, provider_body, runtime):
    created = await create(api, provider_body())
    backup_before = runtime.settings.backup_file.read_bytes()
    response = await api.patch(f"/api/providers/{created['id']}", json={})
    assert response.code == 200
    assert response.json() == created
    assert runtime.settings.backup_file.read_bytes() == backup_before


async def test_patch_api_key_replaces_and_null_removes_it(api, provider_body):
    created = await create(api, provider_body(api_key="sk-original-key-1111"))
    replaced = (await api.patch(f"/api/providers/{created['id']}", json={"api_key": "sk-replaced-key-2222"})).json()
    assert replaced["api_key_preview"] == "…2222"
    removed = (await api.patch(f"/api/providers/{created['id']}", json={"api_key": None})).json()
    assert removed["has_api_key"] is False
    assert removed["api_key_preview"] is None


async def test_patch_to_a_taken_name_is_409_and_changes_nothing(api, provider_body):
    await create(api, provider_body(name="Taken"))
    other = await create(api, provider_body(name="Other"))
    assert_error(await api.patch(f"/api/providers/{other['id']}", json={"name": "TAKEN", "models": []}), 409)
    assert (await api.get(f"/api/providers/{other['id']}")).json() == other


async def test_patch_may_change_the_case_of_its_own_name(api, provider_body):
    created = await create(api, provider_body(name="mixed case"))
    response = await api.patch(f"/api/providers/{created['id']}", json={"name": "Mixed Case"})
    assert response.code == 200 and response.json()["name"] == "Mixed Case"


@pytest.mark.parametrize("fields, path", [
    ({"name": None}, "/name"), ({"base_url": "nope"}, "/base_url"), ({"models": [1]}, "/models/0"),
    ({"created_at": "2020-01-01T00:00:00Z"}, "/created_at"), ({"has_api_key": False}, "/has_api_key"),
])
async def test_invalid_patch_is_422(api, provider_body, fields, path):
    created = await create(api, provider_body())
    body = assert_error(await api.patch(f"/api/providers/{created['id']}", json=fields), 422)
    assert path in [e["path"] for e in body["errors"]]
    assert (await api.get(f"/api/providers/{created['id']}")).json() == created


async def test_patch_unknown_id_is_404(api):
    assert_error(await api.patch("/api/providers/42", json={"name": "x"}), 404)


async def test_delete_is_204_with_empty_body_then_404(api, provider_body):
    created = await create(api, provider_body())
    response = await api.delete(f"/api/providers/{created['id']}")
    assert response.code == 204
    assert response.body == b""
    assert_error(await api.get(f"/api/providers/{created['id']}"), 404)
    assert_error(await api.delete(f"/api/providers/{created['id']}"), 404)


# -- routing errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [
    ("PUT", "/api/providers"), ("DELETE", "/api/providers"), ("PUT", "/api/providers/1"),
    ("POST", "/api/providers/1"), ("POST", "/ping"), ("GET", "/api/providers/1/test"),
])
async def test_method_not_allowed_is_405_json_with_allow(api, method, path):
    response = await api.request(method, path, body=b"{}" if method in ("PUT", "POST") else None)
    assert_error(response, 405)
    assert response.headers["Allow"]


@pytest.mark.parametrize("path", ["/nope", "/api/nope", "/api/providers/1/unknown", "/api/providers/-1"])
async def test_unknown_path_is_json_404(api, path):
    assert_error(await api.get(path), 404)


async def test_ping(api):
    response = await api.get("/ping")
    assert response.code == 200
    assert response.json() == {"status": "ok"}


async def test_api_responses_carry_security_headers(api):
    for response in (await api.get("/api/providers"), await api.get("/api/providers/77")):
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Request-Id"]


async def test_the_provider_json_rendered_by_sql_is_exactly_the_documented_shape(api, provider_body, fake_provider):
    from jsonschema import Draft202012Validator

    from registry import schemas
    created = (await api.post("/api/providers", json=provider_body(base_url=fake_provider.url + "/v1"))).json()
    await api.post(f"/api/providers/{created['id']}/test")
    for provider in (created, (await api.get(f"/api/providers/{created['id']}")).json(),
                     (await api.get("/api/providers")).json()[0]):
        Draft202012Validator(schemas.PROVIDER).validate(provider)
        assert set(provider) == set(schemas.PROVIDER["properties"])
