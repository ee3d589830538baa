"""`server.py` as a user runs it: zero configuration, `.env`, clear start-up errors, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import threading
import time

import pytest

from support.api import http_json
from support.processes import run_cli

NO_TRACEBACK = "Traceback"


def test_zero_configuration_start_creates_the_data_directory(run_server, tmp_path):
    server = run_server({})
    assert http_json("GET", server.url + "/ping") == (200, {"status": "ok"})
    data = tmp_path / "data"
    assert (data / "providers.db").is_file()
    assert stat.S_IMODE((data / "secret.key").stat().st_mode) == 0o600
    assert (data / "config_backup.json").is_file()
    status, created = http_json("POST", server.url + "/api/providers", {
        "name": "Zero", "base_url": "https://api.example.com", "api_key": "sk-zero-config-1234"})
    assert status == 201
    assert server.stop() == 0

    secret = (data / "secret.key").read_text()
    again = run_server({})
    assert (data / "secret.key").read_text() == secret
    status, listed = http_json("GET", again.url + "/api/providers")
    assert listed[0]["api_key_preview"] == "…1234"  # the reused secret still decrypts the key


def test_dotenv_in_the_working_directory_is_read(run_server, tmp_path):
    (tmp_path / ".env").write_text("BACKEND_BACKUP_FILE=./elsewhere/backup.json\n")
    server = run_server({})
    assert http_json("GET", server.url + "/ping")[0] == 200
    assert (tmp_path / "elsewhere" / "backup.json").is_file()


def test_sigterm_lets_a_request_in_flight_finish(run_server, threaded_fake_provider):
    threaded_fake_provider.answer("/v1/models", body={"data": []}, delay=1.0)
    server = run_server({"BACKEND_API_KEY_SECRET": "s"})
    status, created = http_json("POST", server.url + "/api/providers",
                                {"name": "Slow", "base_url": threaded_fake_provider.url + "/v1"})
    outcome = {}

    def probe() -> None:
        outcome["response"] = http_json("POST", f"{server.url}/api/providers/{created['id']}/test")

    thread = threading.Thread(target=probe)
    thread.start()
    deadline = time.monotonic() + 5
    while not threaded_fake_provider.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    server.process.send_signal(signal.SIGTERM)
    thread.join(15)
    assert server.process.wait(15) == 0
    status, result = outcome["response"]
    assert status == 200 and result["status"] == "online"
    assert "shutting down" in server.log()
    # ...and that probe went through curl on the event loop requirements.txt installs.
    assert f"event loop {'asyncio' if sys.platform == 'win32' else 'uvloop'}" in server.log()



def mapped_files(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/maps")
def test_curl_is_loaded_by_the_first_probe_not_at_start_up(run_server, threaded_fake_provider):
    """pycurl (with its own libcurl and OpenSSL, ~6 MB resident) stays out of a server nobody probes."""
    server = run_server({"BACKEND_API_KEY_SECRET": "s"})
    status, created = http_json("POST", server.url + "/api/providers",
                                {"name": "Up", "base_url": threaded_fake_provider.url + "/v1"})
    assert status == 201
    assert "pycurl" not in mapped_files(server.process.pid)
    status, result = http_json("POST", f"{server.url}/api/providers/{created['id']}/test")
    assert status == 200 and result["status"] == "online", result
    assert "pycurl" in mapped_files(server.process.pid)
    status, result = http_json("POST", f"{server.url}/api/providers/{created['id']}/test")
    assert status == 200 and result["status"] == "online", result  # the same transport, kept

def test_sigint_stops_cleanly(run_server):
    server = run_server({"BACKEND_API_KEY_SECRET": "s"})
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(15) == 0
    assert NO_TRACEBACK not in server.log()


def _assert_one_clear_line(result, *words):
    assert result.returncode != 0
    assert NO_TRACEBACK not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("env, words", [
    ({"BACKEND_PORT": "http"}, ["BACKEND_PORT"]),
    ({"BACKEND_REQUEST_TIMEOUT_SECONDS": "ten"}, ["BACKEND_REQUEST_TIMEOUT_SECONDS"]),
    ({"BACKEND_TEST_CONCURRENCY": "-3"}, ["BACKEND_TEST_CONCURRENCY"]),
    ({"BACKEND_CHECK_INTERVAL_SECONDS": "often"}, ["BACKEND_CHECK_INTERVAL_SECONDS"]),
    ({"BACKEND_DATABASE_URL": "mysql://db/registry"}, ["BACKEND_DATABASE_URL"]),
    ({"BACKEND_HOST": "0.0.0.0"}, ["BACKEND_ADMIN_TOKEN", "0.0.0.0"]),
    ({"BACKEND_ADMIN_TOKEN": "x"}, ["BACKEND_ADMIN_TOKEN", "16 characters"]),
    ({"BACKEND_ADMIN_TOKEN": "has spaces in the admin token"}, ["BACKEND_ADMIN_TOKEN", "whitespace"]),
    ({"BACKEND_ALLOWED_ORIGINS": "evil.example"}, ["BACKEND_ALLOWED_ORIGINS"]),
    ({"BACKEND_IDLE_TIMEOUT_SECONDS": "never"}, ["BACKEND_IDLE_TIMEOUT_SECONDS"]),
])
def test_bad_configuration_stops_start_up_with_one_clear_line(tmp_path, env, words):
    _assert_one_clear_line(run_cli([], env, tmp_path, timeout=20), *words)
    assert not (tmp_path / "data" / "providers.db").exists()


def test_unwritable_data_directory_is_one_clear_line(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a directory")
    result = run_cli([], {"BACKEND_DATABASE_URL": "sqlite:///blocker/sub/providers.db"}, tmp_path)
    _assert_one_clear_line(result, "data directory")


def test_secret_file_with_loose_mode_is_refused(tmp_path):
    (tmp_path / "data").mkdir()
    secret = tmp_path / "data" / "secret.key"
    secret.write_text("a-secret-someone-else-can-read\n")
    os.chmod(secret, 0o644)
    _assert_one_clear_line(run_cli([], {}, tmp_path), "secret", "chmod 600")


def test_database_newer_than_the_code_is_refused(tmp_path):
    import sqlite3
    (tmp_path / "data").mkdir()
    conn = sqlite3.connect(tmp_path / "data" / "providers.db")
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    _assert_one_clear_line(run_cli([], {"BACKEND_API_KEY_SECRET": "s"}, tmp_path), "999")


def test_corrupt_database_file_is_one_clear_line(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "providers.db").write_bytes(b"this is not a database" * 100)
    _assert_one_clear_line(run_cli([], {"BACKEND_API_KEY_SECRET": "s"}, tmp_path), "database")


def test_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli([], {"BACKEND_PORT": str(port), "BACKEND_API_KEY_SECRET": "s"}, tmp_path)
    _assert_one_clear_line(result, str(port))


def test_help_lists_the_flags(tmp_path):
    result = run_cli(["--help"], {}, tmp_path)
    assert result.returncode == 0
    for flag in ("--host", "--port", "--export", "--restore", "--backup-file", "--dry-run"):
        assert flag in result.stdout
