"""The inventory survives what goes wrong around it: a deleted database next to its backup
(restore-pending mode), a commit that fails after the backup was written, a umask that would
expose the data directory, a corrupt database file."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.api import http_json
from support.processes import ROOT, TEST_SECRET, clean_environment, run_cli
from registry.keyring import Keyring

KEY = "sk-pending-0123456789abcdef"


def backup_document(keyring: Keyring, count: int) -> dict:
    return {"format": "provider-registry-backup", "version": 1, "exported_at": "2026-11-26T10:00:00Z",
            "providers": [{"id": i, "name": f"Held {i}", "type": "openai", "base_url": "https://api.example.com/v1",
                           "api_key": keyring.encrypt(f"{KEY}-{i}"), "models": ["m"], "is_active": True,
                           "created_at": "2026-11-26T10:00:00Z", "updated_at": "2026-11-26T10:00:00Z",
                           "last_test": None} for i in range(1, count + 1)]}


@pytest.fixture
def held_backup(runtime) -> bytes:
    """A backup file holding 3 providers beside the (empty) database, written before the app starts."""
    data = json.dumps(backup_document(runtime.inventory.keyring, 3)).encode()
    runtime.settings.backup_file.write_bytes(data)
    return data


def assert_restore_pending_detail(response, backup_file: Path) -> None:
    assert response.code == 409, response.body
    detail = response.json()["detail"]
    for words in (str(backup_file), "3 providers", "/api/admin/providers/restore", "python server.py --restore",
                  "move the backup file away"):
        assert words in detail, (words, detail)


@pytest.mark.gen_test(timeout=30)
async def test_an_empty_database_next_to_a_backup_refuses_every_write_but_a_restore(held_backup, api, runtime,
                                                                                  provider_body, fake_provider):
    backup_file = runtime.settings.backup_file
    assert (await api.get("/api/providers")).json() == []
    assert (await api.get("/api/admin/providers/export")).code == 200
    assert_restore_pending_detail(await api.post("/api/providers", json=provider_body()), backup_file)
    assert_restore_pending_detail(await api.post("/api/providers/test"), backup_file)
    for method, path in (("PATCH", "/api/providers/1"), ("DELETE", "/api/providers/1"),
                         ("POST", "/api/providers/1/test"), ("POST", "/api/providers/1/models/sync")):
        response = await api.request(method, path, body=b"{}" if method == "PATCH" else None)
        assert response.code in (404, 409), (method, path, response.body)
    assert fake_provider.requests == []
    assert backup_file.read_bytes() == held_backup

    preview = await api.post("/api/admin/providers/restore?dry_run=true")
    assert preview.code == 200 and preview.json()["added"] == ["Held 1", "Held 2", "Held 3"]
    assert backup_file.read_bytes() == held_backup
    assert (await api.post("/api/admin/providers/restore")).json() == {"restored": 3}
    assert (await api.post("/api/providers", json=provider_body())).code == 201
    assert len(json.loads(backup_file.read_bytes())["providers"]) == 4


@pytest.mark.gen_test(timeout=30)
async def test_restoring_any_valid_document_ends_restore_pending(held_backup, api, provider_body, runtime):
    other = backup_document(runtime.inventory.keyring, 1)
    assert (await api.post("/api/admin/providers/restore", json=other)).json() == {"restored": 1}
    assert (await api.post("/api/providers", json=provider_body())).code == 201


def test_restore_pending_at_start_up_one_warning_and_the_cli_restore_ends_it(tmp_path, run_server):
    env = {"BACKEND_API_KEY_SECRET": TEST_SECRET}
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    held = json.dumps(backup_document(Keyring([TEST_SECRET]), 3)).encode()
    (data / "config_backup.json").write_bytes(held)
    server = run_server(env)
    body = {"name": "New", "base_url": "https://api.example.com/v1"}
    status, answer = http_json("POST", server.url + "/api/providers", body)
    assert status == 409 and "3 providers" in answer["detail"]

    export = run_cli(["--export"], env, tmp_path)
    assert export.returncode == 1 and "3 providers" in export.stderr
    assert (data / "config_backup.json").read_bytes() == held

    restore = run_cli(["--restore"], env, tmp_path)
    assert restore.returncode == 0, restore.stderr
    status, _ = http_json("POST", server.url + "/api/providers", body)
    assert status == 201  # the running server saw the restore
    assert server.stop() == 0
    warnings = [line for line in server.log().splitlines() if " WARNING " in line and "access" not in line]
    assert len(warnings) == 1 and "restore" in warnings[0] and "3 providers" in warnings[0], warnings


@pytest.mark.gen_test(timeout=30)
async def test_a_commit_that_fails_after_the_backup_was_written_puts_the_backup_back(api, runtime, provider_body):
    first = (await api.post("/api/providers", json=provider_body(name="Kept"))).json()
    backup_before = json.loads(runtime.settings.backup_file.read_bytes())
    # A deferred constraint fails only at COMMIT, after the backup has been written.
    other = sqlite3.connect(runtime.settings.database_path)
    other.executescript("""
        CREATE TABLE sabotage (provider_id INTEGER REFERENCES providers (id) DEFERRABLE INITIALLY DEFERRED);
        CREATE TRIGGER sabotage_insert AFTER INSERT ON providers BEGIN INSERT INTO sabotage VALUES (-1); END;
    """)
    other.close()
    response = await api.post("/api/providers", json=provider_body(name="Ghost"))
    assert response.code == 500
    after = json.loads(runtime.settings.backup_file.read_bytes())
    assert after["providers"] == backup_before["providers"]
    assert [p["name"] for p in (await api.get("/api/providers")).json()] == ["Kept"]
    assert (await api.get(f"/api/providers/{first['id']}")).code == 200
    assert not any(p.name.endswith(".tmp") for p in runtime.settings.backup_file.parent.iterdir())


def test_data_directories_are_created_0700_whatever_the_umask(tmp_path):
    env = clean_environment({"BACKEND_API_KEY_SECRET": TEST_SECRET,
                             "BACKEND_DATABASE_URL": f"sqlite:///{tmp_path}/state/db/providers.db",
                             "BACKEND_BACKUP_FILE": str(tmp_path / "state" / "backups" / "config_backup.json")})
    result = subprocess.run([sys.executable, str(ROOT / "server.py"), "--export"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=30, preexec_fn=lambda: os.umask(0))
    assert result.returncode == 0, result.stderr
    for directory in ("state", "state/db", "state/backups"):
        assert stat.S_IMODE((tmp_path / directory).stat().st_mode) == 0o700, directory
    assert stat.S_IMODE((tmp_path / "state" / "backups" / "config_backup.json").stat().st_mode) == 0o600


@pytest.mark.parametrize("damage", ["not a database", "damaged pages"])
def test_the_cli_reports_a_corrupt_database_as_corrupt(tmp_path, damage):
    env = {"BACKEND_API_KEY_SECRET": TEST_SECRET}
    database = tmp_path / "data" / "providers.db"
    assert run_cli(["--export"], env, tmp_path).returncode == 0  # creates and migrates it
    if damage == "not a database":
        database.write_bytes(b"this is not an SQLite file at all " * 200)
    else:
        data = bytearray(database.read_bytes())
        data[100:4096] = b"\xff" * (4096 - 100)  # the schema page, past the 100-byte header
        database.write_bytes(bytes(data))
    for args in (["--restore"], ["--export"], []):
        result = run_cli(args, env, tmp_path, timeout=20)
        assert result.returncode == 1, (args, result.stderr)
        assert "corrupt" in result.stderr, (args, result.stderr)
        assert "is the server running" not in result.stderr
        assert "Traceback" not in result.stderr


def test_scheduled_probes_do_not_run_in_restore_pending_mode(tmp_path, run_server):
    env = {"BACKEND_API_KEY_SECRET": TEST_SECRET, "BACKEND_CHECK_INTERVAL_SECONDS": "0.2"}
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    held = json.dumps(backup_document(Keyring([TEST_SECRET]), 2)).encode()
    (data / "config_backup.json").write_bytes(held)
    server = run_server(env)
    deadline = time.monotonic() + 10
    while "scheduled probe skipped" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "scheduled probe skipped: the database waits for a restore" in server.log()
    assert "scheduled probe:" not in server.log()  # no run happened
    assert (data / "config_backup.json").read_bytes() == held
