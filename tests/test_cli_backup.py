"""`server.py --export / --restore [--dry-run]` and key rotation at start-up, run as a user would."""

from __future__ import annotations

import json
import sqlite3

import pytest

from support.api import http_json
from support.processes import run_cli
from registry.keyring import Keyring

SECRET = "cli-secret"


@pytest.fixture
def served(run_server, tmp_path):
    """A server in tmp_path with two providers; stopped before the test runs the CLI."""
    server = run_server({"BACKEND_API_KEY_SECRET": SECRET})
    for name, key in (("Alpha", "sk-alpha-000000000001"), ("Beta", None)):
        body = {"name": name, "base_url": f"https://{name.lower()}.example.com/v1", "api_key": key}
        assert http_json("POST", server.url + "/api/providers", {k: v for k, v in body.items() if v})[0] == 201
    listing = http_json("GET", server.url + "/api/providers")[1]
    assert server.stop() == 0
    return listing


def db_rows(tmp_path) -> list[tuple]:
    conn = sqlite3.connect(tmp_path / "data" / "providers.db")
    try:
        return conn.execute("SELECT id, name, api_key_ciphertext, updated_at FROM providers ORDER BY id").fetchall()
    finally:
        conn.close()


def test_export_writes_the_document_and_prints_one_summary_line(served, tmp_path):
    result = run_cli(["--export", "--backup-file", "exported.json"], {"BACKEND_API_KEY_SECRET": SECRET}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().count("\n") == 0
    assert "2 providers" in result.stdout
    document = json.loads((tmp_path / "exported.json").read_text())
    assert [p["name"] for p in document["providers"]] == ["Alpha", "Beta"]
    assert "sk-alpha" not in (tmp_path / "exported.json").read_text()


def test_restore_from_a_file_rewrites_the_configured_backup(served, tmp_path, run_server):
    env = {"BACKEND_API_KEY_SECRET": SECRET}
    assert run_cli(["--export", "--backup-file", "saved.json"], env, tmp_path).returncode == 0
    server = run_server(env)
    http_json("DELETE", f"{server.url}/api/providers/{served[0]['id']}")
    http_json("POST", server.url + "/api/providers", {"name": "Gamma", "base_url": "https://g.example.com"})
    assert server.stop() == 0

    result = run_cli(["--restore", "--backup-file", "saved.json"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "restored 2 providers" in result.stdout
    mirrored = json.loads((tmp_path / "data" / "config_backup.json").read_text())
    assert [p["name"] for p in mirrored["providers"]] == ["Alpha", "Beta"]
    server = run_server(env)
    assert http_json("GET", server.url + "/api/providers")[1] == served


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    (b"", "empty"),
    (b'{"format": "provider-registry-backup", "version": 1, "providers": [{"id": 1, ', "not valid JSON"),
    (b'{"format": "other", "version": 1, "providers": []}', "not a provider-registry-backup"),
    (b'{"format": "provider-registry-backup", "version": 9, "providers": []}', "version"),
])
def test_failed_restore_is_one_stderr_line_exit_1_and_changes_nothing(served, tmp_path, content, words):
    source = tmp_path / "bad.json"
    if content is not None:
        source.write_bytes(content)
    backup_before = (tmp_path / "data" / "config_backup.json").read_bytes()
    rows_before = db_rows(tmp_path)
    for extra in ([], ["--dry-run"]):
        result = run_cli(["--restore", "--backup-file", str(source), *extra], {"BACKEND_API_KEY_SECRET": SECRET},
                         tmp_path)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], result.stderr
    assert db_rows(tmp_path) == rows_before
    assert (tmp_path / "data" / "config_backup.json").read_bytes() == backup_before


def test_restore_of_a_backup_from_another_secret_is_refused(served, tmp_path):
    env = {"BACKEND_API_KEY_SECRET": SECRET}
    run_cli(["--export", "--backup-file", "saved.json"], env, tmp_path)
    result = run_cli(["--restore", "--backup-file", "saved.json"], {"BACKEND_API_KEY_SECRET": "wrong"}, tmp_path)
    assert result.returncode == 1
    assert "Alpha" in result.stderr and "cannot be decrypted" in result.stderr


def test_dry_run_prints_the_report_and_changes_nothing(served, tmp_path, run_server):
    env = {"BACKEND_API_KEY_SECRET": SECRET}
    run_cli(["--export", "--backup-file", "saved.json"], env, tmp_path)
    server = run_server(env)
    http_json("PATCH", f"{server.url}/api/providers/{served[0]['id']}", {"api_key": "sk-changed-key-12345"})
    http_json("DELETE", f"{server.url}/api/providers/{served[1]['id']}")
    http_json("POST", server.url + "/api/providers", {"name": "Gamma", "base_url": "https://g.example.com"})
    assert server.stop() == 0
    rows_before = db_rows(tmp_path)
    backup_before = (tmp_path / "data" / "config_backup.json").read_bytes()

    result = run_cli(["--restore", "--dry-run", "--backup-file", "saved.json"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "add: Beta" in result.stdout
    assert "remove: Gamma" in result.stdout
    assert "change: Alpha (api_key, updated_at)" in result.stdout
    assert "sk-changed" not in result.stdout and "sk-alpha" not in result.stdout
    assert db_rows(tmp_path) == rows_before
    assert (tmp_path / "data" / "config_backup.json").read_bytes() == backup_before


def test_rotation_reencrypts_every_key_under_the_new_secret_and_rewrites_the_backup(served, tmp_path, run_server):
    server = run_server({"BACKEND_API_KEY_SECRET": "new-secret," + SECRET})
    assert "re-encrypted 1 API keys" in server.log()
    [alpha, beta] = http_json("GET", server.url + "/api/providers")[1]
    assert alpha["api_key_preview"] == "…0001"
    assert server.stop() == 0

    ciphertext = db_rows(tmp_path)[0][2]
    assert Keyring(["new-secret"]).decrypt(ciphertext) == "sk-alpha-000000000001"
    backup = json.loads((tmp_path / "data" / "config_backup.json").read_text())
    assert Keyring(["new-secret"]).decrypt(backup["providers"][0]["api_key"]) == "sk-alpha-000000000001"

    # The old secret can now be dropped.
    server = run_server({"BACKEND_API_KEY_SECRET": "new-secret"})
    assert http_json("GET", server.url + "/api/providers")[1][0]["api_key_preview"] == "…0001"


def test_key_no_secret_decrypts_is_a_warning_not_a_crash(served, tmp_path, run_server):
    server = run_server({"BACKEND_API_KEY_SECRET": "unrelated-secret,another"})
    assert "'Alpha'" in server.log() and "cannot be decrypted" in server.log()
    assert "sk-alpha" not in server.log()
    alpha = http_json("GET", server.url + "/api/providers")[1][0]
    assert alpha["has_api_key"] is True
    assert alpha["api_key_preview"] is None


def test_a_wrong_single_secret_is_a_start_up_warning(served, tmp_path, run_server):
    server = run_server({"BACKEND_API_KEY_SECRET": "not-the-secret"})
    assert "'Alpha'" in server.log() and "BACKEND_API_KEY_SECRET" in server.log()
    assert http_json("GET", server.url + "/api/providers")[1][0]["api_key_preview"] is None
