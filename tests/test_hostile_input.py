"""Hostile input: keys that could break a header (and leak into logs), names that look alike or hide
control characters, numbers no double holds, ids JavaScript cannot carry, malformed restore
documents, and bodies built to make validation slow. Each is a clear 4xx that changes nothing."""

from __future__ import annotations

import json
import logging
import unicodedata

import jsonschema._utils
import pytest

from registry import schemas

pytestmark = pytest.mark.gen_test(timeout=60)

MAX_ID = 2**53 - 1


def fragments(secret: str, size: int = 8) -> set[str]:
    return {secret[i:i + size] for i in range(len(secret) - size + 1)}


def assert_no_fragment(secret: str, *texts: str) -> None:
    for text in texts:
        leaked = [f for f in fragments(secret) if f in text]
        assert not leaked, leaked[:3]


def state(runtime) -> tuple[bytes, list]:
    rows = runtime.conn.execute("SELECT * FROM providers ORDER BY id").fetchall()
    return runtime.settings.backup_file.read_bytes(), rows


# -- API keys ---------------------------------------------------------------------------------------

BAD_KEYS = ["sk-live-0123456789\n", "sk-live-0123456789\r\n", "sk-live-01234\n56789", "sk-live-0123\x00456789",
            " sk-live-0123456789", "sk-live-0123456789 ", "sk-live-0123456789\t", "sk-live-01234\x7f56789",
            "sk-live-0123456789\u00e9", "sk-live-0123456789\x85"]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_a_key_that_cannot_travel_in_a_header_is_422_everywhere_and_never_echoed(api, runtime, provider_body,
                                                                                       key):
    existing = (await api.post("/api/providers", json=provider_body())).json()
    before = state(runtime)
    responses = [
        await api.post("/api/providers", json=provider_body(api_key=key)),
        await api.patch(f"/api/providers/{existing['id']}", json={"api_key": key}),
        await api.post("/api/providers/test-connection", json=provider_body(api_key=key)),
    ]
    for response in responses:
        assert response.code == 422, response.body
        assert [e["path"] for e in response.json()["errors"]] == ["/api_key"]
        assert_no_fragment(key.strip(), response.body.decode())
    assert state(runtime) == before


async def test_a_stored_key_with_a_line_break_gives_an_error_result_not_a_500(api, runtime, fake_provider, caplog,
                                                                             access_log):
    caplog.set_level(logging.DEBUG)
    key = "sk-live-STORED-BEFORE-THE-RULE-42\n"
    good = (await api.post("/api/providers", json={"name": "Good", "base_url": fake_provider.url + "/v1",
                                                   "api_key": "sk-good-0123456789"})).json()
    # Stored through the registry itself, as a release without the key rule would have stored it.
    bad_id = await runtime.inventory.create({"name": "Bad key", "base_url": fake_provider.url + "/v1", "api_key": key})

    single = await api.post(f"/api/providers/{bad_id}/test")
    assert single.code == 200
    result = single.json()
    assert result["status"] == "error" and result["status_code"] is None
    assert "header" in result["detail"] and "set the key again" in result["detail"]
    assert all(value is None for value in result["timings"].values())

    bulk = await api.post("/api/providers/test")
    assert bulk.code == 200
    by_id = {r["id"]: r for r in bulk.json()["results"]}
    assert by_id[good["id"]]["status"] == "online"
    assert by_id[bad_id]["status"] == "error"
    assert [r.headers.get("authorization") for r in fake_provider.requests] == ["Bearer sk-good-0123456789"]

    lines = access_log() + [record.getMessage() + (record.exc_text or "") for record in caplog.records]
    assert_no_fragment(key.strip(), single.body.decode(), bulk.body.decode(), *lines)


# -- names ------------------------------------------------------------------------------------------

async def test_nfc_and_nfd_forms_of_a_name_are_the_same_name(api, provider_body):
    nfc, nfd = unicodedata.normalize("NFC", "Café"), unicodedata.normalize("NFD", "Café")
    assert nfc != nfd
    created = await api.post("/api/providers", json=provider_body(name=nfd))
    assert created.code == 201
    assert created.json()["name"] == nfc  # stored NFC-normalised
    assert (await api.post("/api/providers", json=provider_body(name=nfc))).code == 409
    assert (await api.post("/api/providers", json=provider_body(name="CAFÉ"))).code == 409
    other = (await api.post("/api/providers", json=provider_body(name="Other"))).json()
    assert (await api.patch(f"/api/providers/{other['id']}", json={"name": nfd})).code == 409
    listed = (await api.get("/api/providers")).json()
    assert [p["name"] for p in listed] == [nfc, "Other"]
    assert [p["name"] for p in (await api.get("/api/providers?q=" + "caf%C3%A9")).json()] == [nfc]
    assert [p["name"] for p in (await api.get("/api/providers?q=" + "cafe%CC%81")).json()] == [nfc]


@pytest.mark.parametrize("name", ["a\x00b", "line\nbreak", "tab\tinside", "x\x85y", "bell\x07", "del\x7fete",
                                  "\x00", "trailing\x1b"])
async def test_a_name_holding_a_control_character_is_422_on_create_and_patch(api, runtime, provider_body, name):
    existing = (await api.post("/api/providers", json=provider_body())).json()
    before = state(runtime)
    assert (await api.post("/api/providers", json=provider_body(name=name))).code == 422
    response = await api.patch(f"/api/providers/{existing['id']}", json={"name": name})
    assert response.code == 422
    assert response.json()["errors"][0]["path"] == "/name"
    assert state(runtime) == before


async def test_surrounding_whitespace_is_still_trimmed(api, provider_body):
    created = await api.post("/api/providers", json=provider_body(name="\t  Trimmed \n"))
    assert created.code == 201 and created.json()["name"] == "Trimmed"


@pytest.mark.parametrize("query", ["%00", "a%0Ab", "%1B", "x%7F", "%C2%85"])
async def test_q_holding_a_control_character_is_400(api, provider_body, query):
    await api.post("/api/providers", json=provider_body())
    response = await api.get(f"/api/providers?q={query}")
    assert response.code == 400
    assert "q" in response.json()["detail"]


async def test_q_with_percent_and_underscore_still_matches_literally(api, provider_body):
    await api.post("/api/providers", json=provider_body(name="100% real_name"))
    await api.post("/api/providers", json=provider_body(name="plain"))
    assert [p["name"] for p in (await api.get("/api/providers?q=%25%20real_")).json()] == ["100% real_name"]


# -- numbers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("number", ["1e999", "-1e400", "1" + "0" * 400, "[1e999]"])
async def test_a_number_no_double_holds_is_400_in_every_body(api, runtime, provider_body, number):
    existing = (await api.post("/api/providers", json=provider_body())).json()
    before = state(runtime)
    document = (await api.get("/api/admin/providers/export")).json()
    document["providers"][0]["models"] = ["__N__"]
    bodies = [
        ("POST", "/api/providers", '{"name": "n", "base_url": "https://x.example.com", "models": [__N__]}'),
        ("PATCH", f"/api/providers/{existing['id']}", '{"models": __N__}'),
        ("POST", "/api/providers/test-connection", '{"name": "n", "base_url": "https://x.example.com", "x": __N__}'),
        ("POST", "/api/admin/providers/restore", json.dumps(document).replace('"__N__"', "__N__")),
        ("POST", "/api/admin/providers/restore?dry_run=true", json.dumps(document).replace('"__N__"', "__N__")),
    ]
    for method, path, body in bodies:
        response = await api.request(method, path, body=body.replace("__N__", number))
        assert response.code == 400, (path, response.body)
        assert "number" in response.json()["detail"] or "JSON" in response.json()["detail"]
    assert state(runtime) == before


# -- ids --------------------------------------------------------------------------------------------

def backup_document(*records: dict) -> dict:
    base = {"name": "Restored", "type": "openai", "base_url": "https://api.example.com/v1", "api_key": None,
            "models": [], "is_active": True, "created_at": "2026-11-26T10:00:00Z",
            "updated_at": "2026-11-26T10:00:00Z", "last_test": None}
    return {"format": "provider-registry-backup", "version": 1, "exported_at": "2026-11-26T10:00:00Z",
            "providers": [{**base, **record} for record in records]}


@pytest.mark.parametrize("provider_id", [MAX_ID + 1, 10**18, 2**63 - 1, 0, -1])
async def test_a_restore_with_an_id_outside_1_to_2_53_minus_1_is_422(api, runtime, provider_body, provider_id):
    await api.post("/api/providers", json=provider_body())
    before = state(runtime)
    response = await api.post("/api/admin/providers/restore", json=backup_document({"id": provider_id}))
    assert response.code == 422
    assert any(e["path"] == "/providers/0/id" for e in response.json()["errors"])
    assert state(runtime) == before


async def test_every_id_handed_out_is_reachable_even_after_the_largest_one_is_restored(api, runtime, provider_body):
    response = await api.post("/api/admin/providers/restore", json=backup_document({"id": MAX_ID}))
    assert response.code == 200
    assert (await api.get(f"/api/providers/{MAX_ID}")).json()["id"] == MAX_ID
    before = state(runtime)
    refused = await api.post("/api/providers", json=provider_body())
    assert refused.code == 409
    assert "id" in refused.json()["detail"]
    assert state(runtime) == before
    for provider in (await api.get("/api/providers")).json():
        assert (await api.get(f"/api/providers/{provider['id']}")).code == 200


# -- restore documents ------------------------------------------------------------------------------

@pytest.mark.parametrize("change, path", [
    (lambda d: d.update(version=1.0), "/version"),
    (lambda d: d.update(version="1"), "/version"),
    (lambda d: d.update(extra="field"), "/extra"),
    (lambda d: d["providers"][0].update(created_at="2026-02-31T10:00:00Z"), "/providers/0/created_at"),
    (lambda d: d["providers"][0].update(created_at="2025-02-29T10:00:00Z"), "/providers/0/created_at"),
    (lambda d: d["providers"][0].update(updated_at="２０２６-11-26T10:00:00Z"), "/providers/0/updated_at"),
    (lambda d: d["providers"][0].update(updated_at="2026-11-26T10:00:00Z\n"), "/providers/0/updated_at"),
    (lambda d: d["providers"][0].update(updated_at="0000-01-01T00:00:00Z"), "/providers/0/updated_at"),
    (lambda d: d.update(exported_at="2026-13-01T00:00:00Z"), "/exported_at"),
    (lambda d: d["providers"][0].update(name="bad\x00name"), "/providers/0/name"),
    (lambda d: d["providers"][0].update(name="bad\nname"), "/providers/0/name"),
    (lambda d: d["providers"][0].update(name=" untrimmed"), "/providers/0/name"),
])
async def test_a_restore_document_breaking_the_field_rules_is_422_and_changes_nothing(api, runtime, provider_body,
                                                                                     change, path):
    await api.post("/api/providers", json=provider_body())
    before = state(runtime)
    document = backup_document({"id": 5})
    change(document)
    for query in ("", "?dry_run=true"):
        response = await api.post("/api/admin/providers/restore" + query, json=document)
        assert response.code == 422, response.body
        assert path in [e["path"] for e in response.json()["errors"]]
    assert state(runtime) == before


async def test_a_leap_day_and_fractional_seconds_are_real_timestamps(api):
    document = backup_document({"id": 5, "created_at": "2024-02-29T23:59:59.123456Z"})
    assert (await api.post("/api/admin/providers/restore", json=document)).code == 200


async def test_a_restore_document_whose_names_differ_only_in_normal_form_is_409(api, runtime):
    before = state(runtime)
    document = backup_document({"id": 1, "name": unicodedata.normalize("NFD", "Café")},
                               {"id": 2, "name": unicodedata.normalize("NFC", "Café")})
    response = await api.post("/api/admin/providers/restore", json=document)
    assert response.code == 409
    assert state(runtime) == before
    single = backup_document({"id": 1, "name": unicodedata.normalize("NFD", "Café")})
    assert (await api.post("/api/admin/providers/restore", json=single)).code == 200
    assert (await api.get("/api/providers/1")).json()["name"] == unicodedata.normalize("NFC", "Café")


# -- validation in linear time ----------------------------------------------------------------------

def test_unique_items_of_mixed_types_compares_no_pairs(monkeypatch):
    """jsonschema's own uniqueItems compares every pair of items that do not sort (ints mixed with
    strings): n²/2 comparisons, minutes for a 1 MiB body. Counted here instead of timed."""
    calls = {"n": 0}
    real_equal = jsonschema._utils.equal

    def counting_equal(one, two):
        calls["n"] += 1
        return real_equal(one, two)

    monkeypatch.setattr(jsonschema._utils, "equal", counting_equal)
    models = [i if i % 2 else str(i) for i in range(2000)]
    errors = schemas.validation_errors(schemas.provider_create_validator,
                                       {"name": "x", "base_url": "https://x.example.com", "models": models})
    assert any(e["path"] == "/models" for e in errors)
    assert calls["n"] <= len(models)


@pytest.mark.parametrize("models, unique", [
    (["a", "b", "a"], False), ([1, 1.0], False), ([True, 1], True), ([[1, "a"], [1, "a"]], False),
    ([{"a": [1]}, {"a": [1.0]}], False), ([{"a": 1}, {"a": 2}], True), ([None, False, 0, ""], True),
])
def test_unique_items_follows_json_equality(models, unique):
    validator = schemas.SchemaValidator({"type": "array", "uniqueItems": True})
    assert validator.is_valid(models) is unique


async def test_twelve_thousand_mixed_models_are_a_422_listing_a_bounded_number_of_errors(api, runtime):
    before = state(runtime)
    models = [i if i % 2 else f"m{i}" for i in range(12000)]
    response = await api.post("/api/providers", json={"name": "x", "base_url": "https://x.example.com",
                                                      "models": models})
    assert response.code == 422
    errors = response.json()["errors"]
    assert {"path": "/models", "message": "must be an array of at most 1000 unique strings of 1 to 200 characters"} \
        in errors
    assert 1 < len(errors) <= schemas.MAX_REPORTED_ERRORS
    assert state(runtime) == before


async def test_a_huge_unknown_field_list_reports_a_bounded_number_of_errors(api):
    body = {"name": "x", "base_url": "https://x.example.com", **{f"field{i}": i for i in range(50000)}}
    response = await api.post("/api/providers", json=body)
    assert response.code == 422
    assert len(response.json()["errors"]) <= schemas.MAX_REPORTED_ERRORS


def test_a_well_formed_backup_document_has_no_validation_errors():
    document = backup_document({"id": 1}, {"id": 2, "name": "Two", "created_at": "2024-02-29T00:00:00.5Z"})
    assert schemas.validation_errors(schemas.backup_document_validator, document) == []
