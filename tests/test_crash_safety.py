"""SIGKILL at awkward moments: acknowledged writes survive, the backup is always a whole document,
and a restore is all or nothing."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time

import pytest

from support.api import http_json
from registry.keyring import Keyring

SECRET = "crash-secret"


def assert_whole_backup(path) -> dict:
    document = json.loads(path.read_text())
    assert document["format"] == "provider-registry-backup"
    assert isinstance(document["providers"], list)
    return document


def test_sigkill_during_concurrent_creates_loses_no_acknowledged_provider(run_server, tmp_path):
    server = run_server({"BACKEND_API_KEY_SECRET": SECRET})
    acknowledged: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def create_many(worker: int) -> None:
        for i in range(500):
            if stop.is_set():
                return
            try:
                status, body = http_json("POST", server.url + "/api/providers",
                                         {"name": f"w{worker}-{i}", "base_url": "https://x.example.com",
                                          "api_key": f"sk-crash-{worker}-{i}-000000"}, timeout=5)
            except OSError:
                return  # the server is gone
            if status == 201:
                with lock:
                    acknowledged.append(body["id"])

    threads = [threading.Thread(target=create_many, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(acknowledged) >= 40

    backup_file = tmp_path / "data" / "config_backup.json"
    document = assert_whole_backup(backup_file)
    backed_up = {p["id"] for p in document["providers"]}
    assert backed_up >= set(acknowledged[:-4])  # at most the writes in flight differ

    restarted = run_server({"BACKEND_API_KEY_SECRET": SECRET})
    listed = {p["id"] for p in http_json("GET", restarted.url + "/api/providers")[1]}
    assert set(acknowledged) <= listed
    # After the restart the backup mirrors the database again.
    assert {p["id"] for p in assert_whole_backup(backup_file)["providers"]} == listed


def _large_document(count: int) -> dict:
    keyring = Keyring([SECRET])
    stamp = "2026-01-01T00:00:00Z"
    return {"format": "provider-registry-backup", "version": 1, "exported_at": stamp, "providers": [
        {"id": i, "name": f"restored-{i}", "type": "openai", "base_url": f"https://p{i}.example.com/v1",
         "api_key": keyring.encrypt(f"sk-restored-{i:06d}"), "models": ["a", "b"], "is_active": True,
         "created_at": stamp, "updated_at": stamp, "last_test": None} for i in range(1, count + 1)]}


@pytest.mark.parametrize("kill_after", [0.5, 0.65, 0.75, 0.85, 1.5])
def test_sigkill_during_a_large_restore_leaves_the_old_or_the_new_inventory(run_server, tmp_path, kill_after):
    server = run_server({"BACKEND_API_KEY_SECRET": SECRET})
    for i in range(3):
        http_json("POST", server.url + "/api/providers", {"name": f"old-{i}", "base_url": "https://old.example.com"})
    document = _large_document(5000)
    # Larger than a request body may be (1 MiB): restored from the backup file, as an operator would.
    (tmp_path / "data" / "config_backup.json").write_text(json.dumps(document))
    thread = threading.Thread(target=lambda: _post_ignoring_errors(server.url))
    thread.start()
    time.sleep(kill_after)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    thread.join(30)

    conn = sqlite3.connect(tmp_path / "data" / "providers.db")
    names = {row[0] for row in conn.execute("SELECT name FROM providers")}
    conn.close()
    old = {f"old-{i}" for i in range(3)}
    new = {p["name"] for p in document["providers"]}
    assert names in (old, new), f"{len(names)} providers: a mix of old and new"
    assert {p["name"] for p in assert_whole_backup(tmp_path / "data" / "config_backup.json")["providers"]} in (old, new)


def _post_ignoring_errors(url: str) -> None:
    try:
        http_json("POST", url + "/api/admin/providers/restore", timeout=30)
    except OSError:
        pass
