"""Holes a review of the hardening found by attacking the running server, each closed: names that
NFC makes too long, model lists and reason phrases an upstream controls, a restore that poisons the
id sequence, large documents that stall the event loop, and the edges of Host, CORS and
`Connection: close`."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web

from registry.redaction import redact, upstream_text
from support.api import http_json
from support.processes import TEST_SECRET, run_cli
from test_browser_requests import raw_exchange, request_bytes

pytestmark = pytest.mark.gen_test(timeout=60)

GROWS_IN_NFC = "\u0958"  # DEVANAGARI LETTER QA: one character, two once NFC-normalised
KEY = "sk-LEAKPROBE-7777-abcdefgh"
MAX_ID = 2**53 - 1


def state(runtime) -> tuple[bytes, list]:
    rows = runtime.conn.execute("SELECT * FROM providers ORDER BY id").fetchall()
    return runtime.settings.backup_file.read_bytes(), rows


# -- names ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [60, 100])
async def test_a_name_nfc_makes_longer_than_100_characters_is_422_and_every_export_restores(api, runtime,
                                                                                             provider_body, count):
    existing = (await api.post("/api/providers", json=provider_body(name="Existing"))).json()
    before = state(runtime)
    for response in (await api.post("/api/providers", json=provider_body(name=GROWS_IN_NFC * count)),
                     await api.patch(f"/api/providers/{existing['id']}", json={"name": GROWS_IN_NFC * count})):
        assert response.code == 422
        assert [e["path"] for e in response.json()["errors"]] == ["/name"]
        assert "NFC" in response.json()["errors"][0]["message"]
    assert state(runtime) == before
    fits = await api.post("/api/providers", json=provider_body(name=GROWS_IN_NFC * 50))  # 100 once normalised
    assert fits.code == 201 and len(fits.json()["name"]) == 100
    document = (await api.get("/api/admin/providers/export")).json()
    assert (await api.post("/api/admin/providers/restore", json=document)).code == 200


async def test_a_restore_document_whose_name_nfc_makes_too_long_is_422(api, runtime):
    document = json.loads(runtime.inventory.export_json())
    document["providers"] = [{"id": 1, "name": GROWS_IN_NFC * 60, "type": "openai",
                              "base_url": "https://api.example.com/v1", "api_key": None, "models": [],
                              "is_active": True, "created_at": "2026-11-26T10:00:00Z",
                              "updated_at": "2026-11-26T10:00:00Z", "last_test": None}]
    response = await api.post("/api/admin/providers/restore", json=document)
    assert response.code == 422
    assert response.json()["errors"][0]["path"] == "/providers/0/name"


# -- what an upstream controls ----------------------------------------------------------------------

async def test_sync_stores_only_model_ids_a_provider_can_hold(api, fake_provider, runtime):
    fake_provider.answer("/v1/models", body={"data": [{"id": "x" * 300}, {"id": ""}, {"id": "ok-1"}, {"id": "ok-2"},
                                                      {"id": "ok-1"}]})
    created = (await api.post("/api/providers", json={"name": "Sync", "base_url": fake_provider.url + "/v1"})).json()
    response = await api.post(f"/api/providers/{created['id']}/models/sync")
    assert response.code == 200
    assert response.json()["models"] == ["ok-1", "ok-2"]
    document = (await api.get("/api/admin/providers/export")).json()
    assert (await api.post("/api/admin/providers/restore", json=document)).code == 200


async def test_sync_of_more_models_than_a_provider_holds_is_502_and_changes_nothing(api, fake_provider, runtime):
    fake_provider.answer("/v1/models", body={"data": [{"id": f"m{i}"} for i in range(1500)]})
    created = (await api.post("/api/providers", json={"name": "Many", "base_url": fake_provider.url + "/v1",
                                                      "models": ["kept"]})).json()
    response = await api.post(f"/api/providers/{created['id']}/models/sync")
    assert response.code == 502
    assert "1500 models" in response.json()["detail"]
    assert (await api.get(f"/api/providers/{created['id']}")).json()["models"] == ["kept"]


class _EchoingUpstream(tornado.web.RequestHandler):
    """Answers with the key it was sent: in the reason phrase, a redirect and a model id."""

    def get(self, mode: str) -> None:
        key = self.request.headers.get("Authorization", "").removeprefix("Bearer ")
        if mode == "reason":
            self.set_status(500, reason=f"Bad key {key}")
        elif mode == "unauthorized":
            self.set_status(401, reason=f"Unknown {key[2:]}")
        elif mode == "redirect":
            self.redirect(f"http://{key.lower()}.example/")
        else:
            self.finish({"data": [{"id": "model-a"}, {"id": f"prefix-{key}"}]})


@pytest.fixture
def echoing_upstream(io_loop):
    app = tornado.web.Application([(r"/(\w+)/models", _EchoingUpstream)])
    server = tornado.httpserver.HTTPServer(app)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    server.stop()


@pytest.mark.parametrize("mode", ["reason", "unauthorized", "redirect", "models"])
async def test_an_upstream_echoing_the_key_gets_no_piece_of_it_stored_or_answered(api, runtime, echoing_upstream,
                                                                                 mode):
    created = (await api.post("/api/providers", json={"name": mode, "base_url": f"{echoing_upstream}/{mode}",
                                                      "api_key": KEY})).json()
    answers = [await api.post(f"/api/providers/{created['id']}/test"),
               await api.post("/api/providers/test-connection", json={"name": "t", "api_key": KEY,
                                                                       "base_url": f"{echoing_upstream}/{mode}"}),
               await api.get(f"/api/providers/{created['id']}/models/discover"),
               await api.get(f"/api/providers/{created['id']}/tests"),
               await api.get("/api/admin/providers/export")]
    texts = [a.body.decode() for a in answers] + [runtime.settings.backup_file.read_text()]
    fragments = {KEY[i:i + 8] for i in range(len(KEY) - 7)} | {KEY.lower()[i:i + 8] for i in range(len(KEY) - 7)}
    for text in texts:
        assert not [f for f in fragments if f in text], text[:300]
    if mode == "reason":
        assert answers[0].json()["detail"] == "HTTP 500 Bad key …"
    if mode == "models":
        assert answers[2].json()["models"] == ["model-a"]


def test_redaction_replaces_every_piece_of_eight_or_more_characters():
    assert redact("key sk-abcdefghijkl here", "sk-abcdefghijkl") == "key … here"
    assert redact("part abcdefgh and efghijkl", "sk-abcdefghijkl") == "part … and …"
    assert redact("short abcdefg stays", "sk-abcdefghijkl") == "short abcdefg stays"
    assert redact("anything", None) == "anything"
    assert upstream_text("HTTP 400 a\x00b\nc" + "x" * 300, None).startswith("HTTP 400 abc")
    assert len(upstream_text("y" * 500, None)) == 200


# -- ids --------------------------------------------------------------------------------------------

async def test_a_restore_restarts_the_id_sequence_after_its_highest_id(api, provider_body):
    def document(provider_id: int) -> dict:
        return {"format": "provider-registry-backup", "version": 1, "providers": [{
            "id": provider_id, "name": f"P{provider_id}", "type": "openai", "base_url": "https://a.example.com",
            "api_key": None, "models": [], "is_active": True, "created_at": "2026-11-26T10:00:00Z",
            "updated_at": "2026-11-26T10:00:00Z", "last_test": None}]}
    assert (await api.post("/api/admin/providers/restore", json=document(MAX_ID))).code == 200
    assert (await api.post("/api/providers", json=provider_body())).code == 409
    assert (await api.post("/api/admin/providers/restore", json=document(5))).code == 200
    created = await api.post("/api/providers", json=provider_body())
    assert created.code == 201 and created.json()["id"] == 6


# -- large documents off the event loop -------------------------------------------------------------

async def test_ping_answers_while_a_large_restore_document_is_validated(api, runtime):
    stamp = "2026-11-26T10:00:00Z"
    providers = [{"id": i, "name": f"p{i}", "type": "openai", "base_url": "https://a.example.com", "api_key": None,
                  "models": [f"m{j}" for j in range(20)], "is_active": True, "created_at": stamp,
                  "updated_at": stamp, "last_test": None} for i in range(1, 2800)]
    providers[-1]["name"] = ""
    body = json.dumps({"format": "provider-registry-backup", "version": 1, "providers": providers})
    assert len(body) < 1024 * 1024
    restore = asyncio.ensure_future(api.post("/api/admin/providers/restore", body=body))
    pings = []
    while not restore.done():
        started = time.monotonic()
        assert (await api.get("/ping")).code == 200
        pings.append(time.monotonic() - started)
    assert (await restore).code == 422
    assert len(pings) >= 2, "the document was validated on the event loop: no /ping got in meanwhile"


# -- restore pending, CLI ---------------------------------------------------------------------------

def test_export_in_restore_pending_mode_is_one_line_without_a_traceback(tmp_path):
    env = {"BACKEND_API_KEY_SECRET": TEST_SECRET}
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    held = json.dumps({"format": "provider-registry-backup", "version": 1, "providers": [{
        "id": 1, "name": "Held", "type": "openai", "base_url": "https://a.example.com", "api_key": None,
        "models": [], "is_active": True, "created_at": "2026-11-26T10:00:00Z", "updated_at": "2026-11-26T10:00:00Z",
        "last_test": None}]})
    (data / "config_backup.json").write_text(held)
    for args in (["--export"], ["--export", "--backup-file", str(data / ".." / "data" / "config_backup.json")]):
        result = run_cli(args, env, tmp_path)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "1 providers" in result.stderr
    assert (data / "config_backup.json").read_text() == held


@pytest.fixture
def truncated_backup(runtime) -> bytes:
    data = b'{"format":"provider-registry-backup","version":1,"providers":[{"id":1,"name":"Hel'
    runtime.settings.backup_file.write_bytes(data)
    return data


async def test_a_truncated_backup_next_to_an_empty_database_is_never_overwritten(truncated_backup, api, runtime,
                                                                                 provider_body):
    response = await api.post("/api/providers", json=provider_body())
    assert response.code == 409
    assert "cannot be read" in response.json()["detail"]
    assert runtime.settings.backup_file.read_bytes() == truncated_backup
    document = {"format": "provider-registry-backup", "version": 1, "providers": []}
    assert (await api.post("/api/admin/providers/restore", json=document)).code == 200
    assert (await api.post("/api/providers", json=provider_body())).code == 201


# -- Host, CORS, Connection: close ------------------------------------------------------------------

@pytest.mark.parametrize("host", ["[::1].evil.com", "[::1]evil.com:80", "[::1]:80x", "[::1]:"])
async def test_a_bracketed_host_with_anything_after_it_is_not_loopback(api, host):
    assert (await api.get("/api/providers", headers={"Host": host})).code == 403


@pytest.mark.env(BACKEND_ALLOWED_ORIGINS="http://app.example.com", BACKEND_ADMIN_TOKEN="review-token-0123456789")
async def test_a_same_origin_preflight_gets_no_cors_headers_and_needs_the_token(api):
    response = await api.request("OPTIONS", "/api/providers", token=None, headers={
        "Origin": api.base_url, "Access-Control-Request-Method": "POST"})
    assert response.code == 401
    assert not any(name.lower().startswith("access-control-") for name in response.headers)


@pytest.mark.parametrize("path", ["/ping", "/ui/static/app.js", "/api/providers"])
async def test_an_http_1_0_response_the_server_closes_after_says_so(http_server, http_port, path):
    data = f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()
    code, headers, _, closed = await raw_exchange(http_port, data)
    assert code == 200 and closed
    assert headers.get("connection", "").lower() == "close"


@pytest.mark.parametrize("content_length", ["abc", "-1"])
async def test_a_bad_content_length_on_a_static_file_is_a_json_400(http_server, http_port, content_length):
    code, headers, body, _ = await raw_exchange(
        http_port, request_bytes("GET", "/ui/static/app.js", {"Content-Length": content_length}))
    assert code == 400 and headers["content-type"].startswith("application/json")
    assert "Content-Length" in json.loads(body)["detail"]


def test_a_stalled_body_is_dropped_after_the_idle_timeout_and_does_not_hold_up_shutdown(run_server):
    server = run_server({"BACKEND_API_KEY_SECRET": TEST_SECRET, "BACKEND_IDLE_TIMEOUT_SECONDS": "1"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_bytes("POST", "/api/providers", {"Content-Type": "application/json",
                                                              "Content-Length": "100"}, b"{"))
        started = time.monotonic()
        assert sock.recv(100) == b""  # dropped, never answered
        assert time.monotonic() - started < 5
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 5  # no request left "in flight" for the shutdown to wait for


@pytest.mark.parametrize("token", ["0123456789abcdéf", "0123456789abcdef\u00a0"])
def test_an_admin_token_that_is_not_printable_ascii_is_refused_at_start_up(tmp_path, token):
    result = run_cli([], {"BACKEND_ADMIN_TOKEN": token}, tmp_path)
    assert result.returncode == 1 and "printable ASCII" in result.stderr


async def test_every_q_value_is_checked_for_control_characters(api):
    assert (await api.get("/api/providers?q=%00&q=a")).code == 400


# -- a second review, of the house ------------------------------------------------------------------

@pytest.mark.parametrize("document", [
    {"format": "provider-registry-backup", "version": 1, "providers": {"api_key": "__CIPHERTEXT__"}},
    [{"api_key": "__CIPHERTEXT__"}],
    {"format": "provider-registry-backup", "version": 1, "providers": [{"id": "__CIPHERTEXT__"}]},
])
async def test_validation_messages_never_quote_a_value_such_as_a_ciphertext(api, runtime, document):
    ciphertext = runtime.inventory.keyring.encrypt("sk-quoted-never-0123456789")
    body = json.dumps(document).replace("__CIPHERTEXT__", ciphertext)
    response = await api.post("/api/admin/providers/restore", body=body)
    assert response.code in (400, 422)
    assert ciphertext[:20] not in response.body.decode()


async def test_a_content_length_too_long_for_any_body_is_413(http_server, http_port):
    code, _, body, closed = await raw_exchange(http_port, request_bytes(
        "POST", "/api/providers", {"Content-Type": "application/json", "Content-Length": "9" * 5000}))
    assert code == 413 and closed
    assert json.loads(body)["detail"]


def test_a_backup_whose_providers_is_not_a_list_starts_in_restore_pending_mode(tmp_path, run_server):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "config_backup.json").write_text('{"format": "provider-registry-backup", "version": 1, "providers": 5}')
    server = run_server({"BACKEND_API_KEY_SECRET": TEST_SECRET})
    status, answer = http_json("POST", server.url + "/api/providers", {"name": "n", "base_url": "https://a.example"})
    assert status == 409 and "cannot be read" in answer["detail"]
    assert "Traceback" not in server.log()


async def test_a_stored_type_this_release_does_not_know_is_an_error_result_not_a_500(api, runtime, fake_provider):
    good = (await api.post("/api/providers", json={"name": "Good", "base_url": fake_provider.url + "/v1"})).json()
    odd = (await api.post("/api/providers", json={"name": "Odd", "base_url": fake_provider.url + "/v1"})).json()
    runtime.conn.execute("UPDATE providers SET type = 'retired-type' WHERE id = ?", (odd["id"],))
    runtime.inventory.get_json(odd["id"])  # (reads see the change: it is this connection's own)
    single = await api.post(f"/api/providers/{odd['id']}/test")
    assert single.code == 200 and "not known" in single.json()["detail"]
    bulk = {r["id"]: r["status"] for r in (await api.post("/api/providers/test")).json()["results"]}
    assert bulk == {good["id"]: "online", odd["id"]: "error"}


async def test_a_backup_that_cannot_be_written_is_logged_as_an_error(api, runtime, provider_body, caplog):
    backup = runtime.settings.backup_file
    backup.unlink()
    backup.mkdir()
    (backup / "blocker").write_text("x")
    response = await api.post("/api/providers", json=provider_body())
    assert response.code == 500 and "Cannot write the backup file" in response.json()["detail"]
    assert any(r.levelname == "ERROR" and "Cannot write the backup file" in r.getMessage() for r in caplog.records)
