"""Portable exports: the inventory with its keys under a passphrase (scrypt, parameters in the
document) instead of the server's secret, restored on a server whose secret differs; a wrong or
missing passphrase changes nothing; the passphrase is never logged or stored."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3

import pytest

from registry.keyring import Keyring
from support.processes import TEST_SECRET, run_cli

pytestmark = pytest.mark.gen_test(timeout=60)

PASSPHRASE = "correct horse battery staple"
KEYS = ["sk-portable-first-0123456789", "sk-portable-second-abcdefghij"]
OTHER_SECRET = "a-quite-different-secret-for-server-b"


async def seed(api) -> list[dict]:
    for index, key in enumerate(KEYS):
        body = {"name": f"Portable {index}", "base_url": f"https://p{index}.example.com/v1", "api_key": key,
                "models": ["m"]}
        assert (await api.post("/api/providers", json=body)).code == 201
    await api.post("/api/providers", json={"name": "Keyless", "base_url": "http://127.0.0.1:11434"})
    return (await api.get("/api/providers")).json()


async def portable_export(api, passphrase: str = PASSPHRASE):
    return await api.post("/api/admin/providers/export", json={"passphrase": passphrase})


def passphrase_header(passphrase: str) -> dict[str, str]:
    # On the wire a header is bytes: these are the UTF-8 bytes of the passphrase.
    return {"X-Backup-Passphrase": passphrase.encode("utf-8").decode("latin-1")}


async def test_a_portable_export_holds_keys_only_the_passphrase_opens(api, runtime):
    await seed(api)
    response = await portable_export(api)
    assert response.code == 200 and response.headers["Cache-Control"] == "no-store"
    document = response.json()
    wrap = document["key_wrap"]
    assert (wrap["kdf"], wrap["cipher"], wrap["n"], wrap["r"], wrap["p"]) == ("scrypt", "fernet", 2**15, 8, 1)
    assert len(base64.b64decode(wrap["salt"])) == 16
    text = response.body.decode()
    for key in KEYS:
        assert key not in text
    keyed = [p for p in document["providers"] if p["api_key"] is not None]
    assert len(keyed) == 2
    assert not any(runtime.inventory.keyring.can_decrypt(p["api_key"]) for p in keyed)
    assert [p["name"] for p in document["providers"]] == ["Portable 0", "Portable 1", "Keyless"]
    # The plain export and the backup file are unchanged: keys under the server's secret, no key_wrap.
    assert "key_wrap" not in (await api.get("/api/admin/providers/export")).json()
    assert "key_wrap" not in json.loads(runtime.settings.backup_file.read_text())
    again = (await portable_export(api)).json()["key_wrap"]
    assert again["salt"] != wrap["salt"]  # a fresh salt each time
    audits = [e for e in (await api.get("/api/audit")).json()["events"] if e["target_name"] == "portable export"]
    assert [a["action"] for a in audits] == ["inventory.export"] * 2


@pytest.mark.parametrize("body, path", [({"passphrase": "too short"}, "/passphrase"), ({}, "/passphrase"),
                                        ({"passphrase": " " + PASSPHRASE}, "/passphrase"),
                                        ({"passphrase": PASSPHRASE + "\n"}, "/passphrase"),
                                        ({"passphrase": PASSPHRASE, "extra": 1}, "/extra"),
                                        ({"passphrase": 123456789012345}, "/passphrase")])
async def test_a_bad_export_request_is_422_and_never_echoes_the_passphrase(api, body, path):
    response = await api.post("/api/admin/providers/export", json=body)
    assert response.code == 422
    assert path in [e["path"] for e in response.json()["errors"]]
    assert "too short" not in response.body.decode() and "123456789012345" not in response.body.decode()


async def test_restore_with_the_passphrase_re_encrypts_the_keys_under_the_current_secret(api, runtime):
    listing = await seed(api)
    document = (await portable_export(api)).json()
    for provider in listing:
        await api.delete(f"/api/providers/{provider['id']}")
    preview = await api.post("/api/admin/providers/restore?dry_run=true", json=document,
                             headers=passphrase_header(PASSPHRASE))
    assert preview.code == 200 and preview.json()["added"] == ["Portable 0", "Portable 1", "Keyless"]
    assert (await api.get("/api/providers")).json() == []
    response = await api.post("/api/admin/providers/restore", json=document, headers=passphrase_header(PASSPHRASE))
    assert response.code == 200 and response.json() == {"restored": 3}
    restored = (await api.get("/api/providers")).json()
    assert [p["api_key_preview"] for p in restored] == [p["api_key_preview"] for p in listing]
    stored = dict(runtime.conn.execute("SELECT name, api_key_ciphertext FROM providers").fetchall())
    assert runtime.inventory.keyring.decrypt(stored["Portable 0"]) == KEYS[0]
    backup = json.loads(runtime.settings.backup_file.read_text())
    assert "key_wrap" not in backup
    assert runtime.inventory.keyring.decrypt(backup["providers"][1]["api_key"]) == KEYS[1]


@pytest.mark.parametrize("headers, detail", [
    ({}, "protected by a passphrase"),
    (passphrase_header("not the passphrase at all"), "does not open"),
    (passphrase_header(PASSPHRASE[:-1]), "does not open"),
])
async def test_a_missing_or_wrong_passphrase_is_409_and_changes_nothing(api, runtime, headers, detail):
    await seed(api)
    document = (await portable_export(api)).json()
    await api.post("/api/providers", json={"name": "Added after", "base_url": "https://after.example.com"})
    before, backup_before = (await api.get("/api/providers")).json(), runtime.settings.backup_file.read_bytes()
    for query in ("", "?dry_run=true"):
        response = await api.post(f"/api/admin/providers/restore{query}", json=document, headers=headers)
        assert response.code == 409, response.body
        assert detail in response.json()["detail"]
    assert (await api.get("/api/providers")).json() == before
    assert runtime.settings.backup_file.read_bytes() == backup_before


async def test_a_wrong_passphrase_is_refused_even_for_an_export_without_keys(api):
    await api.post("/api/providers", json={"name": "Keyless", "base_url": "http://127.0.0.1:11434"})
    document = (await portable_export(api)).json()
    response = await api.post("/api/admin/providers/restore", json=document,
                              headers=passphrase_header("a wrong passphrase here"))
    assert response.code == 409


@pytest.mark.parametrize("field, value", [
    ("n", 2**30), ("n", 2**17), ("n", 1000), ("r", 9), ("r", 1), ("r", 1000), ("p", 64), ("kdf", "pbkdf2"),
    ("salt", "!!not base64!!"), ("extra", 1)])
async def test_a_key_wrap_outside_the_bounds_is_422_before_any_work(api, field, value):
    await seed(api)
    document = (await portable_export(api)).json()
    document["key_wrap"][field] = value
    response = await api.post("/api/admin/providers/restore", json=document, headers=passphrase_header(PASSPHRASE))
    assert response.code == 422, response.body
    assert any(e["path"].startswith("/key_wrap") for e in response.json()["errors"])


async def test_a_unicode_passphrase_works_through_the_header(api):
    await seed(api)
    passphrase = "pässwörd – ünïcode ✓ 12"
    document = (await portable_export(api, passphrase)).json()
    response = await api.post("/api/admin/providers/restore?dry_run=true", json=document,
                              headers=passphrase_header(passphrase))
    assert response.code == 200 and response.json()["unchanged"] == 3


async def test_the_passphrase_never_reaches_a_log_line_or_the_database(api, runtime, caplog, access_log):
    caplog.set_level(logging.DEBUG)
    await seed(api)
    document = (await portable_export(api)).json()
    await api.post("/api/admin/providers/restore", json=document, headers=passphrase_header(PASSPHRASE))
    await api.post("/api/admin/providers/restore", json=document, headers=passphrase_header("wrong passphrase!!"))
    logged = caplog.text + "\n".join(access_log())
    assert PASSPHRASE not in logged and "wrong passphrase!!" not in logged
    files = b"".join(p.read_bytes() for p in runtime.settings.database_path.parent.iterdir() if p.is_file())
    assert PASSPHRASE.encode() not in files


def test_the_command_line_moves_an_inventory_between_servers_with_different_secrets(tmp_path):
    source, target = tmp_path / "a", tmp_path / "b"
    env_a = {"BACKEND_DATABASE_URL": f"sqlite:///{source / 'p.db'}", "BACKEND_BACKUP_FILE": str(source / "b.json"),
             "BACKEND_API_KEY_SECRET": TEST_SECRET}
    env_b = {"BACKEND_DATABASE_URL": f"sqlite:///{target / 'p.db'}", "BACKEND_BACKUP_FILE": str(target / "b.json"),
             "BACKEND_API_KEY_SECRET": OTHER_SECRET}
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"format": "provider-registry-backup", "version": 1, "providers": [
        {"id": 7, "name": "Moved", "type": "openai", "base_url": "https://moved.example.com/v1",
         "api_key": Keyring([TEST_SECRET]).encrypt(KEYS[0]), "models": [], "is_active": True,
         "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "last_test": None}]}))
    assert run_cli(["--restore", "--backup-file", str(plain)], env_a, tmp_path).returncode == 0
    secret_file, exported = tmp_path / "passphrase.txt", tmp_path / "portable.json"
    secret_file.write_text(PASSPHRASE + "\n")
    done = run_cli(["--export", "--passphrase-file", str(secret_file), "--backup-file", str(exported)], env_a,
                   tmp_path)
    assert done.returncode == 0, done.stderr
    assert "portable" in done.stdout and PASSPHRASE not in done.stdout + done.stderr
    assert "key_wrap" in json.loads(exported.read_text())
    # Server B cannot read it without the passphrase, and reads it with it.
    refused = run_cli(["--restore", "--backup-file", str(exported)], env_b, tmp_path)
    assert refused.returncode == 1 and "passphrase" in refused.stderr and len(refused.stderr.splitlines()) == 1
    preview = run_cli(["--restore", "--dry-run", "--passphrase-file", str(secret_file), "--backup-file",
                       str(exported)], env_b, tmp_path)
    assert preview.returncode == 0 and "add: Moved" in preview.stdout
    moved = run_cli(["--restore", "--passphrase-file", str(secret_file), "--backup-file", str(exported)], env_b,
                    tmp_path)
    assert moved.returncode == 0, moved.stderr
    conn = sqlite3.connect(target / "p.db")
    [(provider_id, ciphertext)] = conn.execute("SELECT id, api_key_ciphertext FROM providers").fetchall()
    conn.close()
    assert provider_id == 7 and Keyring([OTHER_SECRET]).decrypt(ciphertext) == KEYS[0]
    assert not Keyring([TEST_SECRET]).can_decrypt(ciphertext)


def test_the_command_line_refuses_a_portable_export_over_the_backup_file_and_a_bad_passphrase_file(tmp_path):
    env = {"BACKEND_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}", "BACKEND_BACKUP_FILE": str(tmp_path / "b.json"),
           "BACKEND_API_KEY_SECRET": TEST_SECRET}
    secret_file = tmp_path / "passphrase.txt"
    secret_file.write_text(PASSPHRASE)
    over = run_cli(["--export", "--passphrase-file", str(secret_file), "--backup-file", str(tmp_path / "b.json")],
                   env, tmp_path)
    assert over.returncode == 1 and "another file" in over.stderr
    short = tmp_path / "short.txt"
    short.write_text("short\n")
    too_short = run_cli(["--export", "--passphrase-file", str(short), "--backup-file", str(tmp_path / "x.json")], env,
                        tmp_path)
    assert too_short.returncode == 1 and "at least 12" in too_short.stderr
    missing = run_cli(["--export", "--passphrase-file", str(tmp_path / "nope"), "--backup-file",
                       str(tmp_path / "x.json")], env, tmp_path)
    assert missing.returncode == 1 and "cannot read the passphrase file" in missing.stderr
    alone = run_cli(["--passphrase-file", str(secret_file)], env, tmp_path)
    assert alone.returncode == 1 and "goes with --export or --restore" in alone.stderr


@pytest.mark.parametrize("change", [{"salt": "AAAAAAAAAAAAAAAAA"}, {"check": "x"}, {"salt": "A" * 22 + "=="},
                                    {"n": 16384.0, "r": 8.0, "p": 1.0}])
@pytest.mark.parametrize("passphrase", ["", PASSPHRASE])
async def test_a_malformed_key_wrap_or_an_empty_passphrase_is_a_clear_4xx_never_a_500(api, change, passphrase):
    document = (await portable_export(api)).json()
    document["key_wrap"].update(change)
    response = await api.post("/api/admin/providers/restore?dry_run=true", json=document,
                              headers=passphrase_header(passphrase))
    assert response.code in (409, 422), response.body
    assert response.json()["detail"]
