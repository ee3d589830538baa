"""Export and restore through the API: round trip, refusals that change nothing, dry-run diff."""

from __future__ import annotations

import copy
import json

import pytest

from registry.keyring import Keyring

pytestmark = pytest.mark.gen_test(timeout=30)

KEY = "sk-restore-key-abcdef123456"


def data_files_bytes(runtime) -> dict[str, bytes]:
    runtime.conn.execute("PRAGMA wal_checkpoint(FULL)")
    directory = runtime.settings.database_path.parent
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


async def seed(api, fake_provider, count=3) -> list[dict]:
    created = []
    for i in range(count):
        response = await api.post("/api/providers", json={
            "name": f"Seed {i}", "type": ["openai", "anthropic", "ollama"][i % 3],
            "base_url": fake_provider.url + "/v1", "api_key": f"{KEY}-{i}", "models": [f"model-{i}"]})
        assert response.code == 201
        created.append(response.json())
    await api.post(f"/api/providers/{created[0]['id']}/test")
    return (await api.get("/api/providers")).json()


async def test_export_is_the_backup_document_with_ciphertext_keys(api, fake_provider, runtime):
    listing = await seed(api, fake_provider)
    document = (await api.get("/api/admin/providers/export")).json()
    assert document["format"] == "provider-registry-backup"
    assert document["version"] == 1
    assert [p["id"] for p in document["providers"]] == [p["id"] for p in listing]
    assert document["providers"][0]["last_test"] == listing[0]["last_test"]
    for record in document["providers"]:
        assert KEY not in record["api_key"]
        assert runtime.inventory.keyring.decrypt(record["api_key"]).startswith(KEY)
    on_disk = json.loads(runtime.settings.backup_file.read_text())
    assert on_disk["providers"] == document["providers"]


def restored_listing(listing: list[dict]) -> list[dict]:
    """The listing as a restore gives it back: health is not in the backup, so every provider starts unknown."""
    return [{**p, "health": {"state": "unknown", "since": None, "reason": None}} for p in listing]


async def test_round_trip_export_delete_restore_gives_an_identical_listing_with_working_keys(api, fake_provider):
    listing = await seed(api, fake_provider)
    document = (await api.get("/api/admin/providers/export")).json()
    for provider in listing:
        assert (await api.delete(f"/api/providers/{provider['id']}")).code == 204
    response = await api.post("/api/admin/providers/restore", json=document)
    assert response.code == 200
    assert response.json() == {"restored": 3}
    assert (await api.get("/api/providers")).json() == restored_listing(listing)

    fake_provider.requests.clear()
    result = (await api.post(f"/api/providers/{listing[0]['id']}/test")).json()
    assert result["status"] == "online"
    assert fake_provider.requests[0].headers["authorization"] == f"Bearer {KEY}-0"


async def test_restore_with_empty_body_reads_the_backup_file(api, fake_provider, runtime):
    listing = await seed(api, fake_provider)
    saved = runtime.settings.backup_file.read_bytes()
    await api.delete(f"/api/providers/{listing[1]['id']}")
    await api.post("/api/providers", json={"name": "Added later", "base_url": "https://later.example.com"})
    runtime.settings.backup_file.write_bytes(saved)
    response = await api.post("/api/admin/providers/restore")
    assert response.code == 200 and response.json() == {"restored": 3}
    assert (await api.get("/api/providers")).json() == restored_listing(listing)


async def test_restore_keeps_ids_and_new_providers_come_after_the_highest(api, fake_provider):
    document = (await api.get("/api/admin/providers/export")).json()
    keyring = Keyring(["test-secret-for-the-suite"])
    document["providers"] = [{
        "id": 40, "name": "Forty", "type": "openai", "base_url": "https://forty.example.com", "api_key":
        keyring.encrypt("sk-forty-0000000000"), "models": [], "is_active": True,
        "created_at": "2025-01-02T03:04:05Z", "updated_at": "2025-01-02T03:04:05Z", "last_test": None}]
    assert (await api.post("/api/admin/providers/restore", json=document)).code == 200
    restored = (await api.get("/api/providers/40")).json()
    assert restored["created_at"] == "2025-01-02T03:04:05Z"
    assert restored["api_key_preview"] == "…0000"
    created = (await api.post("/api/providers", json={"name": "New", "base_url": "https://n.example.com"})).json()
    assert created["id"] > 40


async def test_restore_replaces_the_backup_file_with_the_restored_inventory(api, fake_provider, runtime):
    listing = await seed(api, fake_provider)
    document = (await api.get("/api/admin/providers/export")).json()
    document["providers"] = document["providers"][:1]
    assert (await api.post("/api/admin/providers/restore", json=document)).code == 200
    on_disk = json.loads(runtime.settings.backup_file.read_text())
    assert [p["id"] for p in on_disk["providers"]] == [listing[0]["id"]]


def _corrupt(document: dict, how: str) -> object:
    doc = copy.deepcopy(document)
    first = doc["providers"][0]
    if how == "format":
        doc["format"] = "something-else"
    elif how == "version":
        doc["version"] = 2
    elif how == "no providers":
        del doc["providers"]
    elif how == "bad url":
        first["base_url"] = "ftp://nope"
    elif how == "missing field":
        del first["created_at"]
    elif how == "unknown field":
        first["plaintext_key"] = "sk-should-not-be-here"
    elif how == "bad type":
        first["type"] = "mistral"
    elif how == "bad timestamp":
        first["updated_at"] = "yesterday"
    elif how == "duplicate id":
        doc["providers"][1]["id"] = first["id"]
    elif how == "duplicate name":
        doc["providers"][1]["name"] = first["name"].upper()
    elif how == "not an object":
        return [doc]
    elif how == "bad last_test":
        first["last_test"] = {"status": "great"}
    return doc


@pytest.mark.parametrize("how, status", [
    ("format", 422), ("version", 422), ("no providers", 422), ("bad url", 422), ("missing field", 422),
    ("unknown field", 422), ("bad type", 422), ("bad timestamp", 422), ("duplicate id", 409),
    ("duplicate name", 409), ("not an object", 422), ("bad last_test", 422),
])
async def test_invalid_document_is_refused_and_changes_nothing(api, fake_provider, runtime, how, status):
    await seed(api, fake_provider)
    document = (await api.get("/api/admin/providers/export")).json()
    before = data_files_bytes(runtime)
    for query in ("", "?dry_run=true"):
        response = await api.post("/api/admin/providers/restore" + query, json=_corrupt(document, how))
        assert response.code == status, response.body
        assert response.json()["detail"]
        assert data_files_bytes(runtime) == before


async def test_schema_errors_name_their_paths(api, fake_provider):
    await seed(api, fake_provider)
    document = (await api.get("/api/admin/providers/export")).json()
    response = await api.post("/api/admin/providers/restore", json=_corrupt(document, "bad url"))
    assert "/providers/0/base_url" in [e["path"] for e in response.json()["errors"]]


async def test_backup_from_another_secret_is_refused_naming_the_providers(api, fake_provider, runtime):
    await seed(api, fake_provider)
    document = (await api.get("/api/admin/providers/export")).json()
    document["providers"][1]["api_key"] = Keyring(["a different secret"]).encrypt("sk-foreign-123456789")
    before = data_files_bytes(runtime)
    response = await api.post("/api/admin/providers/restore", json=document)
    assert response.code == 409
    assert "Seed 1" in response.json()["detail"]
    assert "sk-foreign" not in response.body.decode()
    assert data_files_bytes(runtime) == before


@pytest.mark.parametrize("content, status", [
    (None, 400), (b"", 400), (b'{"format": "provider-registry-backup", "ver', 400), (b"\x00\xff garbage", 400),
    (b'{"format": "x"}', 422),
])
async def test_unusable_backup_file_is_refused_and_changes_nothing(api, fake_provider, runtime, content, status):
    await seed(api, fake_provider)
    backup_file = runtime.settings.backup_file
    if content is None:
        backup_file.unlink()
    else:
        backup_file.write_bytes(content)
    before = data_files_bytes(runtime)
    response = await api.post("/api/admin/providers/restore")
    assert response.code == status, response.body
    assert response.json()["detail"]
    assert data_files_bytes(runtime) == before


async def test_invalid_json_body_is_400(api):
    response = await api.request("POST", "/api/admin/providers/restore", body=b'{"format": ')
    assert response.code == 400
    assert "JSON" in response.json()["detail"]


async def test_dry_run_reports_the_diff_and_changes_nothing(api, fake_provider, runtime):
    listing = await seed(api, fake_provider)
    document = (await api.get("/api/admin/providers/export")).json()
    keyring = runtime.inventory.keyring
    # Changes after the export: the restore would undo them.
    await api.patch(f"/api/providers/{listing[0]['id']}", json={"models": ["changed"], "api_key": "sk-new-key-999999"})
    await api.delete(f"/api/providers/{listing[2]['id']}")
    await api.post("/api/providers", json={"name": "Only here", "base_url": "https://x.example.com"})
    # A re-encryption of the same key is not a change.
    document["providers"][1]["api_key"] = keyring.encrypt(keyring.decrypt(document["providers"][1]["api_key"]))
    before = data_files_bytes(runtime)

    response = await api.post("/api/admin/providers/restore?dry_run=true", json=document)
    assert response.code == 200
    report = response.json()
    assert report["dry_run"] is True
    assert report["added"] == ["Seed 2"]
    assert report["removed"] == ["Only here"]
    assert report["changed"] == [{"name": "Seed 0", "fields": ["api_key", "models", "updated_at"]}]
    assert report["unchanged"] == 1
    text = response.body.decode()
    assert "sk-new-key" not in text and KEY not in text and document["providers"][0]["api_key"] not in text
    assert data_files_bytes(runtime) == before


async def test_dry_run_false_restores(api, fake_provider):
    listing = await seed(api, fake_provider)
    document = (await api.get("/api/admin/providers/export")).json()
    await api.delete(f"/api/providers/{listing[0]['id']}")
    response = await api.post("/api/admin/providers/restore?dry_run=false", json=document)
    assert response.json() == {"restored": 3}


async def test_bad_dry_run_value_is_400(api):
    assert (await api.post("/api/admin/providers/restore?dry_run=maybe")).code == 400
