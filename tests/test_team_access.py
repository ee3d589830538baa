"""Team access: named tokens with roles and scopes, credentials for applications, resolve by model,
and the audit log of every change and secret read."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import sqlite3

import pytest

from registry.keyring import Keyring
from support.api import http_json
from support.processes import TEST_SECRET, run_cli

pytestmark = pytest.mark.gen_test(timeout=30)

ADMIN = "team-access-admin-token-0123"
with_admin = pytest.mark.env(BACKEND_ADMIN_TOKEN=ADMIN)
KEY = "sk-team-access-0123456789abcdef"
_names = itertools.count(1)


async def make_token(api, role: str, **fields) -> dict:
    response = await api.post("/api/tokens", json={"name": f"{role}-{next(_names)}", "role": role, **fields},
                              token=ADMIN)
    assert response.code == 201, response.body
    return response.json()


async def add_provider(api, fake_provider, **fields) -> dict:
    body = {"name": f"P{next(_names)}", "base_url": fake_provider.url + "/v1", "api_key": KEY, "models": ["m"],
            **fields}
    response = await api.post("/api/providers", json=body, token=ADMIN)
    assert response.code == 201, response.body
    return response.json()


# -- tokens -----------------------------------------------------------------------------------------

@with_admin
async def test_a_token_is_shown_once_and_stored_as_its_sha256(api, runtime):
    created = await make_token(api, "viewer")
    secret = created["token"]
    assert re.fullmatch(r"prt_[A-Za-z0-9_-]{43}", secret)
    assert set(created) == {"id", "name", "role", "providers", "created_at", "expires_at", "last_used_at", "token"}
    stored = runtime.conn.execute("SELECT * FROM api_tokens").fetchall()
    assert secret not in json.dumps(stored)
    assert hashlib.sha256(secret.encode()).hexdigest() in json.dumps(stored)
    listed = (await api.get("/api/tokens", token=ADMIN)).json()
    assert [t["name"] for t in listed] == [created["name"]] and "token" not in listed[0]
    own = (await api.get("/api/tokens/self", token=secret)).json()
    assert own["id"] == created["id"] and own["role"] == "viewer" and "token" not in own


@with_admin
async def test_roles_decide_what_each_token_may_do_and_403_names_the_role(api, fake_provider):
    provider = await add_provider(api, fake_provider)
    viewer, consumer = (await make_token(api, "viewer"))["token"], (await make_token(api, "consumer"))["token"]
    assert (await api.get("/api/providers", token=viewer)).code == 200
    assert (await api.get(f"/api/providers/{provider['id']}/tests", token=viewer)).code == 200
    for token, role in ((viewer, "viewer"), (consumer, "consumer")):
        for method, path, body in (("POST", "/api/providers", {"name": "x", "base_url": "https://x.example"}),
                                   ("PATCH", f"/api/providers/{provider['id']}", {}),
                                   ("DELETE", f"/api/providers/{provider['id']}", None),
                                   ("POST", f"/api/providers/{provider['id']}/test", None),
                                   ("GET", "/api/admin/providers/export", None), ("GET", "/api/tokens", None),
                                   ("GET", "/api/audit", None)):
            response = await api.request(method, path, json_body=body if body is not None else ..., token=token)
            assert response.code == 403, (role, method, path)
            assert role in response.json()["detail"]
    assert (await api.get(f"/api/providers/{provider['id']}/credentials", token=viewer)).code == 403
    assert (await api.get(f"/api/providers/{provider['id']}/credentials", token=consumer)).code == 200
    assert fake_provider.requests == []


@with_admin
async def test_a_scoped_token_sees_only_its_providers(api, fake_provider):
    mine, other = await add_provider(api, fake_provider), await add_provider(api, fake_provider)
    token = (await make_token(api, "consumer", providers=[mine["id"]]))["token"]
    listed = await api.get("/api/providers", token=token)
    assert [p["id"] for p in listed.json()] == [mine["id"]] and listed.headers["X-Total-Count"] == "1"
    for path in (f"/api/providers/{other['id']}", f"/api/providers/{other['id']}/tests",
                 f"/api/providers/{other['id']}/credentials"):
        assert (await api.get(path, token=token)).code == 404
    assert (await api.get(f"/api/providers/{mine['id']}/credentials", token=token)).code == 200
    assert (await api.get("/api/resolve?model=m", token=token)).json()["candidates"][0]["id"] == mine["id"]


async def test_authentication_switches_on_with_the_first_token(api):
    assert (await api.get("/api/providers", token=None)).code == 200  # loopback-only, open
    created = await api.post("/api/tokens", json={"name": "first", "role": "admin"}, token=None)
    assert created.code == 201
    assert (await api.get("/api/providers", token=None)).code == 401
    assert (await api.get("/api/providers", token=created.json()["token"])).code == 200
    assert (await api.get("/api/providers", headers={"Host": "rebind.attacker.example"},
                          token=created.json()["token"])).code == 200  # the Host rule follows the same switch


async def test_the_last_admin_token_cannot_be_revoked_through_the_api(api):
    first = (await api.post("/api/tokens", json={"name": "only admin", "role": "admin"}, token=None)).json()
    response = await api.delete(f"/api/tokens/{first['id']}", token=first["token"])
    assert response.code == 409 and "lock every admin out" in response.json()["detail"]
    second = (await api.post("/api/tokens", json={"name": "second", "role": "admin"}, token=first["token"])).json()
    assert (await api.delete(f"/api/tokens/{first['id']}", token=second["token"])).code == 204
    assert (await api.get("/api/providers", token=first["token"])).code == 401


@with_admin
async def test_an_expired_token_is_401_and_last_use_is_written_at_most_once_a_minute(api, runtime):
    created = await make_token(api, "viewer", expires_in_days=1)
    assert created["expires_at"] > created["created_at"]
    for _ in range(3):
        assert (await api.get("/api/providers", token=created["token"])).code == 200
    used = runtime.conn.execute("SELECT last_used_at FROM api_tokens").fetchone()[0]
    assert used is not None
    assert (await api.get("/api/tokens/self", token=created["token"])).json()["last_used_at"] == used
    runtime.conn.execute("UPDATE api_tokens SET expires_at = '2020-01-01T00:00:00.000Z'")
    assert (await api.get("/api/providers", token=created["token"])).code == 401


@with_admin
@pytest.mark.parametrize("body", [{"name": "x", "role": "root"}, {"name": "", "role": "admin"},
                                  {"name": "x", "role": "admin", "expires_in_days": 0},
                                  {"name": "x", "role": "admin", "providers": ["a"]}, {"role": "admin"},
                                  {"name": "x", "role": "admin", "extra": 1}])
async def test_a_bad_token_body_is_422(api, body):
    assert (await api.post("/api/tokens", json=body, token=ADMIN)).code == 422
    assert (await api.get("/api/tokens", token=ADMIN)).json() == []


def test_the_cli_creates_lists_and_revokes_tokens_seen_by_a_running_server_at_once(tmp_path, run_server):
    env = {"BACKEND_API_KEY_SECRET": TEST_SECRET}
    server = run_server(env)
    assert http_json("GET", server.url + "/api/providers")[0] == 200
    created = run_cli(["--create-token", "deploy", "--role", "admin"], env, tmp_path)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert re.fullmatch(r"prt_[A-Za-z0-9_-]{43}", secret) and len(created.stdout.splitlines()) == 1
    assert http_json("GET", server.url + "/api/providers")[0] == 401
    assert http_json("GET", server.url + "/api/providers", token=secret)[0] == 200
    listing = run_cli(["--list-tokens"], env, tmp_path)
    assert "deploy" in listing.stdout and "admin" in listing.stdout and secret not in listing.stdout
    assert run_cli(["--revoke-token", "deploy"], env, tmp_path).returncode == 0  # even the last admin
    assert http_json("GET", server.url + "/api/providers", token=secret)[0] == 200  # open again: no auth
    assert http_json("GET", server.url + "/api/providers")[0] == 200


@pytest.mark.parametrize("args", [["--create-token", "x"], ["--create-token", "x", "--role", "root"],
                                  ["--role", "admin"], ["--create-token", "x", "--role", "admin", "--providers", "a"],
                                  ["--revoke-token", "nobody"]])
def test_bad_token_arguments_are_one_line_and_exit_1(tmp_path, args):
    result = run_cli(args, {"BACKEND_API_KEY_SECRET": TEST_SECRET}, tmp_path)
    assert result.returncode == 1
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr
    assert "Traceback" not in result.stderr


# -- credentials ------------------------------------------------------------------------------------

@with_admin
@pytest.mark.parametrize("provider_type, headers, query", [
    ("openai", {"Authorization": f"Bearer {KEY}"}, {}),
    ("anthropic", {"x-api-key": KEY, "anthropic-version": "2023-06-01"}, {}),
    ("gemini", {"x-goog-api-key": KEY}, {}),
    ("azure", {"api-key": KEY}, {"api-version": "2024-10-21"}),
    ("ollama", {"Authorization": f"Bearer {KEY}"}, {}),
])
async def test_credentials_carry_the_key_and_exactly_the_types_headers_and_query(api, fake_provider, provider_type,
                                                                                 headers, query):
    provider = await add_provider(api, fake_provider, type=provider_type)
    consumer = (await make_token(api, "consumer"))["token"]
    response = await api.get(f"/api/providers/{provider['id']}/credentials", token=consumer)
    assert response.code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json() == {"id": provider["id"], "name": provider["name"], "type": provider_type,
                               "base_url": provider["base_url"], "api_key": KEY, "headers": headers, "query": query}


@with_admin
async def test_credentials_of_an_inactive_provider_or_an_undecryptable_key_are_409(api, fake_provider,
                                                                                   add_foreign_key_provider):
    inactive = await add_provider(api, fake_provider, is_active=False)
    foreign = await add_foreign_key_provider()
    assert (await api.get(f"/api/providers/{inactive['id']}/credentials", token=ADMIN)).code == 409
    response = await api.get(f"/api/providers/{foreign}/credentials", token=ADMIN)
    assert response.code == 409 and "cannot be decrypted" in response.json()["detail"]


async def test_credentials_are_never_handed_out_anonymously(api, fake_provider):
    created = (await api.post("/api/providers", json={"name": "Open", "base_url": fake_provider.url,
                                                      "api_key": KEY})).json()
    response = await api.get(f"/api/providers/{created['id']}/credentials")
    assert response.code == 403 and "consumer token" in response.json()["detail"]
    assert KEY not in response.body.decode()


# -- resolve ----------------------------------------------------------------------------------------

@with_admin
async def test_resolve_orders_up_then_unknown_then_down_then_by_p50_then_id(api, fake_provider, runtime):
    ids = [(await add_provider(api, fake_provider, models=["target", "other"]))["id"] for _ in range(4)]
    await add_provider(api, fake_provider, models=["target"], is_active=False)
    await add_provider(api, fake_provider, models=["elsewhere"])

    def result(status: str, latency: float) -> dict:
        return {"status": status, "status_code": 200, "latency_ms": latency, "detail": None, "missing_models": [],
                "checked_at": "2026-11-26T10:00:00.000Z", "timings": None}
    for _ in range(2):  # two results that are not online make a provider down
        await runtime.inventory.record_probe_results({ids[0]: result("offline", 1.0)})
    await runtime.inventory.record_probe_results({ids[1]: result("online", 90.0)})
    await runtime.inventory.record_probe_results({ids[3]: result("online", 10.0)})
    answer = (await api.get("/api/resolve?model=target", token=ADMIN)).json()
    assert answer["model"] == "target"
    assert [c["id"] for c in answer["candidates"]] == [ids[3], ids[1], ids[2], ids[0]]
    assert [c["health"] for c in answer["candidates"]] == ["up", "up", "unknown", "down"]
    assert answer["candidates"][0]["p50_ms"] == 10.0 and answer["candidates"][2]["p50_ms"] is None
    assert (await api.get("/api/resolve?model=nobody-has-it", token=ADMIN)).code == 404
    assert (await api.get("/api/resolve", token=ADMIN)).code == 400


# -- audit ------------------------------------------------------------------------------------------

@with_admin
async def test_every_change_and_secret_read_is_on_record_with_field_names_only(api, fake_provider, runtime):
    provider = await add_provider(api, fake_provider)
    await api.patch(f"/api/providers/{provider['id']}", json={"api_key": KEY + "-new", "models": ["n"]}, token=ADMIN)
    await api.patch(f"/api/providers/{provider['id']}", json={"models": ["n"]}, token=ADMIN)  # no change: no record
    consumer = await make_token(api, "consumer")
    await api.get(f"/api/providers/{provider['id']}/credentials", token=consumer["token"])
    document = (await api.get("/api/admin/providers/export", token=ADMIN)).json()
    await api.post("/api/admin/providers/restore", json=document, token=ADMIN)
    await api.delete(f"/api/providers/{provider['id']}", token=ADMIN)
    events = (await api.get("/api/audit", token=ADMIN)).json()["events"]
    assert [e["action"] for e in events] == ["provider.delete", "inventory.restore", "inventory.export",
                                             "credentials.read", "token.create", "provider.update",
                                             "provider.create"]
    update = events[5]
    assert update["fields"] == ["api_key", "models"] and update["actor"] == "BACKEND_ADMIN_TOKEN"
    assert update["target_type"] == "provider" and update["target_id"] == provider["id"]
    assert events[3]["actor"] == consumer["name"] and events[3]["role"] == "consumer"
    assert all(e["client"] == "127.0.0.1" and e["request_id"] for e in events)
    stored = json.dumps(runtime.conn.execute("SELECT * FROM audit_events").fetchall())
    ciphertexts = [p["api_key"] for p in document["providers"]]
    for secret in (KEY, KEY + "-new", consumer["token"], *ciphertexts):
        assert secret not in stored and secret not in json.dumps(events)


@with_admin
async def test_refused_requests_count_into_one_record_per_client_and_minute(api):
    for _ in range(5):
        assert (await api.get("/api/providers", token="prt_" + "x" * 43)).code == 401
    viewer = (await make_token(api, "viewer"))["token"]
    assert (await api.delete("/api/providers/1", token=viewer)).code == 403
    denied = (await api.get("/api/audit?action=auth.denied", token=ADMIN)).json()["events"]
    assert len(denied) == 1 and denied[0]["count"] == 6


@with_admin
@pytest.mark.env(BACKEND_AUDIT_KEEP="5")
async def test_the_audit_log_keeps_the_latest_records_and_pages_newest_first(api, fake_provider):
    for i in range(12):
        await add_provider(api, fake_provider, name=f"Audited {i}")
    first = (await api.get("/api/audit?limit=3", token=ADMIN)).json()
    assert [e["target_name"] for e in first["events"]] == ["Audited 11", "Audited 10", "Audited 9"]
    rest = (await api.get(f"/api/audit?limit=3&before={first['next_before']}", token=ADMIN)).json()
    assert [e["target_name"] for e in rest["events"]][:1] == ["Audited 8"]
    everything = (await api.get("/api/audit?limit=1000", token=ADMIN)).json()
    assert len(everything["events"]) == 5 and everything["next_before"] is None
    by_target = (await api.get("/api/audit?action=provider.create&target_id=12", token=ADMIN)).json()["events"]
    assert [e["target_name"] for e in by_target] == ["Audited 11"]


def test_audit_and_tokens_are_not_part_of_the_backup(tmp_path):
    env = {"BACKEND_API_KEY_SECRET": TEST_SECRET}
    assert run_cli(["--create-token", "t", "--role", "viewer"], env, tmp_path).returncode == 0
    assert run_cli(["--export"], env, tmp_path).returncode == 0
    backup = json.loads((tmp_path / "data" / "config_backup.json").read_text())
    assert set(backup) == {"format", "version", "exported_at", "providers"}
    conn = sqlite3.connect(tmp_path / "data" / "providers.db")
    assert [r[0] for r in conn.execute("SELECT actor FROM audit_events ORDER BY id")] == ["cli", "cli"]
    conn.close()
    assert Keyring  # (the keyring module stays importable beside the CLI: used by the fixtures)


@with_admin
async def test_a_flood_of_bad_tokens_writes_one_record_not_one_per_request(api, runtime):
    changes_before = runtime.conn.total_changes
    for _ in range(150):
        assert (await api.get("/api/providers", token="prt_" + "y" * 43)).code == 401
    assert runtime.conn.total_changes - changes_before <= 3  # one insert, a count update or two
    denied = (await api.get("/api/audit?action=auth.denied", token=ADMIN)).json()["events"]
    assert len(denied) == 1 and denied[0]["count"] == 150


# -- from an attack on team access ------------------------------------------------------------------

async def test_the_last_valid_admin_cannot_be_revoked_even_with_expired_admins_around(api, runtime):
    first = (await api.post("/api/tokens", json={"name": "adm1", "role": "admin"})).json()
    second = (await api.post("/api/tokens", json={"name": "adm2", "role": "admin", "expires_in_days": 1},
                             token=first["token"])).json()
    runtime.conn.execute("UPDATE api_tokens SET expires_at = '2020-01-01T00:00:00.000Z' WHERE id = ?",
                         (second["id"],))
    response = await api.delete(f"/api/tokens/{first['id']}", token=first["token"])
    assert response.code == 409
    assert (await api.get("/api/providers", token=first["token"])).code == 200


@with_admin
async def test_a_scope_never_comes_to_cover_a_provider_it_was_not_given(api, fake_provider):
    granted = await add_provider(api, fake_provider, api_key="sk-team-x-private-1234")
    consumer = (await make_token(api, "consumer", providers=[granted["id"]]))["token"]
    await api.delete(f"/api/providers/{granted['id']}", token=ADMIN)
    document = (await api.get("/api/admin/providers/export", token=ADMIN)).json()
    assert (await api.post("/api/admin/providers/restore", json=document, token=ADMIN)).code == 200
    unrelated = await add_provider(api, fake_provider, api_key="sk-team-y-private-9999")
    assert unrelated["id"] != granted["id"]  # a restore does not hand an id out again
    for provider_id in (granted["id"], unrelated["id"]):
        response = await api.get(f"/api/providers/{provider_id}/credentials", token=consumer)
        assert response.code == 404 and "sk-team" not in response.body.decode()
    own = (await api.get("/api/tokens/self", token=consumer)).json()
    assert own["providers"] == []  # the deleted provider left the scope


async def test_the_first_token_created_through_the_api_must_be_an_admin(api):
    response = await api.post("/api/tokens", json={"name": "app", "role": "consumer"})
    assert response.code == 409 and "admin" in response.json()["detail"]
    assert (await api.get("/api/providers")).code == 200  # still open: nothing was created


@with_admin
@pytest.mark.parametrize("body", [{"name": "scoped admin", "role": "admin", "providers": [1]},
                                  {"name": "bad\nname", "role": "viewer"}])
async def test_a_scoped_admin_or_a_name_with_control_characters_is_422(api, body):
    assert (await api.post("/api/tokens", json=body, token=ADMIN)).code == 422


@pytest.mark.parametrize("args", [["--create-token", "bad\nname\x1b[31m", "--role", "viewer"],
                                  ["--create-token", "x", "--role", "viewer", "--providers", "0"],
                                  ["--create-token", "x", "--role", "admin", "--providers", "1"]])
def test_the_cli_refuses_what_the_api_refuses(tmp_path, args):
    result = run_cli(args, {"BACKEND_API_KEY_SECRET": TEST_SECRET}, tmp_path)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "\x1b" not in result.stderr


def test_a_token_created_by_the_cli_is_seen_at_once_and_refusals_are_counted_on_disk(tmp_path, run_server):
    env = {"BACKEND_API_KEY_SECRET": TEST_SECRET}
    server = run_server(env)
    assert http_json("GET", server.url + "/api/providers")[0] == 200
    secret = run_cli(["--create-token", "racer", "--role", "admin"], env, tmp_path).stdout.strip()
    assert http_json("GET", server.url + "/api/providers")[0] == 401  # no wait: the very next request
    for _ in range(9):
        assert http_json("GET", server.url + "/api/providers", token="prt_" + "z" * 43)[0] == 401
    assert server.stop() == 0  # shutdown writes the refusals counted in memory
    conn = sqlite3.connect(tmp_path / "data" / "providers.db")
    assert conn.execute("SELECT count FROM audit_events WHERE action = 'auth.denied'").fetchall() == [(10,)]
    conn.close()
    assert secret.startswith("prt_")
