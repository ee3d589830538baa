"""The backup file mirrors every change before the response; keys never appear in plaintext."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat

import pytest

from store import provider_rows
from registry.backup_file import BackupWriteFailed
from store.database import connect
from registry.read_cache import READ_RECHECK_SECONDS
from registry.errors import Conflict, NotFound


pytestmark = pytest.mark.gen_test

PLAINTEXT_KEY = "sk-PLAINTEXT-never-leaves-9f8e7d6c5b4a"


def read_backup(runtime) -> dict:
    return json.loads(runtime.settings.backup_file.read_text())


def data_files_bytes(runtime) -> dict[str, bytes]:
    """Every file the server wrote in its data directory (database, WAL, backup)."""
    directory = runtime.settings.database_path.parent
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


async def test_backup_follows_create_update_and_delete(api, provider_body, runtime):
    created = (await api.post("/api/providers", json=provider_body(name="Mirror"))).json()
    document = read_backup(runtime)
    assert document["format"] == "provider-registry-backup"
    assert document["version"] == 1
    assert document["exported_at"].endswith("Z")
    [record] = document["providers"]
    assert {k: record[k] for k in ("id", "name", "type", "base_url", "models", "is_active", "created_at",
                                   "updated_at", "last_test")} == \
           {k: created[k] for k in ("id", "name", "type", "base_url", "models", "is_active", "created_at",
                                    "updated_at", "last_test")}
    assert record["api_key"].startswith("gAAAA")  # Fernet ciphertext

    await api.patch(f"/api/providers/{created['id']}", json={"models": ["new-model"]})
    assert read_backup(runtime)["providers"][0]["models"] == ["new-model"]

    await api.delete(f"/api/providers/{created['id']}")
    assert read_backup(runtime)["providers"] == []


async def test_backup_file_is_mode_0600_and_leaves_no_temp_files(api, provider_body, runtime):
    await api.post("/api/providers", json=provider_body())
    backup_file = runtime.settings.backup_file
    assert stat.S_IMODE(backup_file.stat().st_mode) == 0o600
    assert [p.name for p in backup_file.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("request_args", [
    ("POST", "/api/providers", {"name": "", "base_url": "x"}),
    ("POST", "/api/providers", {"name": "First", "base_url": "https://dup.example.com"}),
    ("PATCH", "/api/providers/2", {"name": "first"}),
    ("PATCH", "/api/providers/1", {"base_url": "not a url"}),
    ("PATCH", "/api/providers/99", {"name": "Nobody"}),
    ("DELETE", "/api/providers/99", ...),
    ("POST", "/api/providers", b"{broken"),
])
async def test_rejected_request_leaves_database_and_backup_byte_identical(api, provider_body, runtime, request_args):
    await api.post("/api/providers", json=provider_body(name="First"))
    await api.post("/api/providers", json=provider_body(name="Second"))
    before = data_files_bytes(runtime)
    method, path, payload = request_args
    if isinstance(payload, bytes):
        response = await api.request(method, path, body=payload)
    else:
        response = await api.request(method, path, json_body=payload)
    assert 400 <= response.code < 500
    assert data_files_bytes(runtime) == before


async def test_unwritable_backup_rolls_the_change_back_with_500(api, provider_body, runtime):
    created = (await api.post("/api/providers", json=provider_body(name="Kept"))).json()
    backup_file = runtime.settings.backup_file
    backup_file.unlink()
    backup_file.mkdir()  # a directory where the file should be: the rename must fail
    (backup_file / "blocker").write_text("x")

    response = await api.post("/api/providers", json=provider_body(name="Lost"))
    assert response.code == 500
    assert "backup" in response.json()["detail"]
    response = await api.patch(f"/api/providers/{created['id']}", json={"name": "Renamed"})
    assert response.code == 500
    assert [p["name"] for p in (await api.get("/api/providers")).json()] == ["Kept"]
    assert [p.name for p in backup_file.parent.iterdir() if p.name.endswith(".tmp")] == []


async def test_plaintext_key_reaches_no_response_no_file_and_no_log_line(api, provider_body, runtime, caplog,
                                                                         access_log):
    caplog.set_level(logging.DEBUG)
    responses = []
    created = await api.post("/api/providers", json=provider_body(api_key=PLAINTEXT_KEY))
    responses.append(created)
    provider_id = created.json()["id"]
    responses.append(await api.get("/api/providers"))
    responses.append(await api.get(f"/api/providers/{provider_id}"))
    responses.append(await api.patch(f"/api/providers/{provider_id}", json={"api_key": PLAINTEXT_KEY + "X"}))
    responses.append(await api.patch(f"/api/providers/{provider_id}", json={"api_key": PLAINTEXT_KEY}))
    responses.append(await api.post("/api/providers", json=provider_body(api_key=PLAINTEXT_KEY + "\r\nX-Bad: 1")))
    responses.append(await api.get("/api/admin/providers/export"))

    for response in responses:
        assert PLAINTEXT_KEY.encode() not in response.body
        assert PLAINTEXT_KEY not in str(dict(response.headers))
    runtime.conn.execute("PRAGMA wal_checkpoint(FULL)")
    for name, content in data_files_bytes(runtime).items():
        assert PLAINTEXT_KEY.encode() not in content, name
        assert PLAINTEXT_KEY[-12:].encode() not in content, name
    lines = access_log() + [record.getMessage() for record in caplog.records]
    assert len(access_log()) == len(responses), "every request has its access log line"
    assert all(PLAINTEXT_KEY not in line for line in lines)


async def test_undecryptable_key_still_lists_with_null_preview(api, add_foreign_key_provider):
    provider_id = await add_foreign_key_provider()
    one = (await api.get(f"/api/providers/{provider_id}")).json()
    for listed in ((await api.get("/api/providers")).json()[0], one):
        assert listed["has_api_key"] is True
        assert listed["api_key_preview"] is None


async def test_database_file_is_not_readable_by_others(api, provider_body, runtime):
    await api.post("/api/providers", json=provider_body())
    assert stat.S_IMODE(os.stat(runtime.settings.database_path).st_mode) & 0o077 == 0


async def test_backup_equals_a_full_export_after_any_mix_of_changes(api, provider_body, runtime, fake_provider):
    """The backup is kept up to date incrementally; it must always equal a fresh read of the database."""

    def providers_in(document_bytes: bytes) -> list:
        return json.loads(document_bytes)["providers"]

    async def assert_mirrors() -> None:
        assert providers_in(runtime.settings.backup_file.read_bytes()) == providers_in(runtime.inventory.export_json())
        # Reads are served from rendered JSON kept between requests: it must match a fresh rendering.
        listed = (await api.get("/api/providers")).json()
        fresh = provider_rows.providers_json(runtime.conn, [p["id"] for p in listed])
        assert listed == [json.loads(fresh[p["id"]]) for p in listed]

    ids = [(await api.post("/api/providers", json=provider_body(base_url=fake_provider.url))).json()["id"]
           for _ in range(5)]
    await assert_mirrors()
    await api.patch(f"/api/providers/{ids[2]}", json={"models": ["x"], "api_key": None})
    await api.delete(f"/api/providers/{ids[0]}")
    await assert_mirrors()
    await api.post(f"/api/providers/{ids[1]}/test")
    await api.post("/api/providers/test")
    await assert_mirrors()
    await api.post("/api/providers", json=provider_body(name="Late"))
    await api.patch(f"/api/providers/{ids[4]}", json={"name": "late"})  # 409: nothing changes
    await api.delete(f"/api/providers/{ids[3]}")
    await assert_mirrors()
    document = json.loads(runtime.inventory.export_json())
    document["providers"] = document["providers"][1:]
    await api.post("/api/admin/providers/restore", json=document)
    await api.post("/api/providers", json=provider_body(name="After restore"))
    await assert_mirrors()
    assert [p["name"] for p in providers_in(runtime.settings.backup_file.read_bytes())][-1] == "After restore"


# -- group commit -------------------------------------------------------------------------------------

async def test_changes_requested_together_commit_together_and_fail_alone(runtime):
    inventory = runtime.inventory
    body = {"base_url": "https://group.example.com"}
    first, duplicate, third = (inventory.create({**body, "name": name}) for name in ("Grouped", "GROUPED", "Third"))
    outcomes = await asyncio.gather(first, duplicate, third, return_exceptions=True)
    assert isinstance(outcomes[0], int) and isinstance(outcomes[2], int)
    assert isinstance(outcomes[1], Conflict) and "already exists" in outcomes[1].detail
    names = [p["name"] for p in json.loads(runtime.settings.backup_file.read_text())["providers"]]
    assert names == ["Grouped", "Third"]
    assert [p.name for p in inventory.list()] == ["Grouped", "Third"]


async def test_a_group_whose_changes_all_fail_leaves_the_backup_untouched(runtime):
    await runtime.inventory.create({"name": "Only", "base_url": "https://x.example.com"})
    before = runtime.settings.backup_file.read_bytes()
    outcomes = await asyncio.gather(*(runtime.inventory.create({"name": "only", "base_url": "https://y.example.com"})
                                      for _ in range(3)), runtime.inventory.delete(404), return_exceptions=True)
    assert [type(o) for o in outcomes] == [Conflict] * 3 + [NotFound]
    assert runtime.settings.backup_file.read_bytes() == before


async def test_a_group_that_cannot_be_mirrored_fails_as_a_whole(runtime):
    await runtime.inventory.create({"name": "Before", "base_url": "https://x.example.com"})
    backup_file = runtime.settings.backup_file
    backup_file.unlink()
    backup_file.mkdir()
    (backup_file / "blocker").write_text("x")
    outcomes = await asyncio.gather(*(runtime.inventory.create({"name": f"Lost {i}", "base_url": "https://x.example.com"})
                                      for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, BackupWriteFailed) for o in outcomes)
    assert [p.name for p in runtime.inventory.list()] == ["Before"]


async def test_concurrent_api_writes_all_land_in_database_and_backup(api, provider_body, runtime):
    responses = await asyncio.gather(*(api.post("/api/providers", json=provider_body(name=f"Concurrent {i % 25}"))
                                       for i in range(30)))
    codes = sorted(r.code for r in responses)
    assert codes == [201] * 25 + [409] * 5
    listed = {p["name"] for p in (await api.get("/api/providers")).json()}
    backed_up = {p["name"] for p in json.loads(runtime.settings.backup_file.read_text())["providers"]}
    assert listed == backed_up == {f"Concurrent {i}" for i in range(25)}


async def test_changes_committed_by_another_process_are_not_hidden_by_caches(api, provider_body, runtime):
    """E.g. `server.py --restore` run while the server is up: reads and the backup follow the database."""
    created = (await api.post("/api/providers", json=provider_body(name="Cached"))).json()
    await api.get(f"/api/providers/{created['id']}")  # now rendered and kept
    other = connect(runtime.settings.database_path)
    try:
        other.execute("UPDATE providers SET name = 'Changed elsewhere', name_key = 'changed elsewhere' WHERE id = ?",
                      (created["id"],))
    finally:
        other.close()
    await asyncio.sleep(READ_RECHECK_SECONDS)  # reads look for outside commits at most this often
    assert (await api.get(f"/api/providers/{created['id']}")).json()["name"] == "Changed elsewhere"
    assert (await api.get("/api/providers")).json()[0]["name"] == "Changed elsewhere"
    await api.post("/api/providers", json=provider_body(name="Next"))
    names = [p["name"] for p in json.loads(runtime.settings.backup_file.read_text())["providers"]]
    assert names == ["Changed elsewhere", "Next"]


async def test_patches_in_one_group_each_compare_with_the_row_as_the_one_before_left_it(runtime):
    provider_id = await runtime.inventory.create({"name": "Diffed", "base_url": "https://original.example.com"})
    # Queued in the same loop turn: one group, applied in order. The second PATCH sets the value the
    # row had before the first; compared with the row as it is then, it is a change.
    await asyncio.gather(runtime.inventory.update(provider_id, {"base_url": "https://moved.example.com"}),
                         runtime.inventory.update(provider_id, {"base_url": "https://original.example.com"}))
    assert runtime.inventory.get(provider_id).base_url == "https://original.example.com"
    backed_up = json.loads(runtime.settings.backup_file.read_text())["providers"]
    assert [p["base_url"] for p in backed_up] == ["https://original.example.com"]


async def test_provider_json_renders_on_any_connection(runtime):
    provider_id = await runtime.inventory.create({"name": "Anywhere", "base_url": "https://x.example.com",
                                                  "api_key": "sk-anywhere-0123456789"})
    other = connect(runtime.settings.database_path)
    try:
        rendered = json.loads(provider_rows.provider_json(other, provider_id))
    finally:
        other.close()
    assert rendered["name"] == "Anywhere" and rendered["has_api_key"] is True
    assert rendered["api_key_preview"] is None  # no keyring on that connection: no preview, but no error
    assert json.loads(runtime.inventory.get_json(provider_id))["api_key_preview"] == "…6789"
