"""Replication with Litestream (README, "Replication with Litestream"): the real `litestream` binary
replicates the server's database with deploy/litestream.yml, to a file replica and to an S3 server
on loopback (moto); server and Litestream are SIGKILLed mid-write; `litestream restore` into an
empty directory and a server started there with the same secret give back everything acknowledged
long enough before the kill — providers and their keys, tokens, audit records, webhooks and their
secrets — and the server rewrites the JSON backup from the restored database."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from support.api import http_json
from support.litestream import litestream_binary
from support.processes import ROOT, TEST_SECRET, closed_port

CONFIG = ROOT / "deploy" / "litestream.yml"
ADMIN_TOKEN = "replication-test-admin-token"
SYNC_INTERVAL = 0.2  # seconds; LITESTREAM_SYNC_INTERVAL for these tests (Litestream's default is 1 s)
# How long after its acknowledgement a write may still be only on the primary: Litestream notices it
# within the config's monitor-interval, ships it within the sync interval, and the upload itself
# takes a moment (moto is a Python server); bench/replication.py measures the real window.
UPLOAD_ALLOWANCE = 0.3
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "replication-test", "AWS_SECRET_ACCESS_KEY": "replication-test-secret"}


def monitor_interval() -> float:
    """deploy/litestream.yml's monitor-interval (how soon Litestream notices a commit), in seconds."""
    value = yaml.safe_load(CONFIG.read_text())["dbs"][0]["monitor-interval"]
    assert value.endswith("ms"), value
    return int(value[:-2]) / 1000


def loss_bound() -> float:
    return monitor_interval() + SYNC_INTERVAL + UPLOAD_ALLOWANCE


class Processes:
    """Process groups started by a test (Litestream and the server it runs), SIGKILLed at teardown."""

    def __init__(self) -> None:
        self.groups: list[subprocess.Popen] = []

    def start(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
        with open(log, "ab") as log_file:
            process = subprocess.Popen(args, env=env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.groups.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # Litestream and the server it execs: one group
        except ProcessLookupError:
            pass
        process.wait(timeout=10)

    def kill_all(self) -> None:
        for process in self.groups:
            self.kill(process)


@pytest.fixture
def processes():
    started = Processes()
    yield started
    started.kill_all()


def wait_for_ping(url: str, process: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    import urllib.request
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args[0]} exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer /ping within {timeout} s:\n{log.read_text()}")


def wait_for_port_closed(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"something still listens on port {port} after the kill")


def machine_environment(data: Path, replica_url: str, port: int) -> dict[str, str]:
    """What one machine's server and Litestream see: no AWS_* from here (AWS_CA_BUNDLE makes
    Litestream refuse an S3 replica), test credentials, the data in `data`."""
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **S3_CREDENTIALS,
            "BACKEND_DATABASE_URL": str(data / "providers.db"), "BACKEND_BACKUP_FILE": str(data / "config_backup.json"),
            "BACKEND_API_KEY_SECRET": TEST_SECRET, "BACKEND_ADMIN_TOKEN": ADMIN_TOKEN, "BACKEND_PORT": str(port),
            "LITESTREAM_REPLICA_URL": replica_url, "LITESTREAM_SYNC_INTERVAL": f"{int(SYNC_INTERVAL * 1000)}ms"}


class WebhookReceiver(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook_receiver():
    WebhookReceiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WebhookReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 on a loopback port with the bucket `registry`."""
    import boto3
    port = closed_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"moto-{port}.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"moto's server did not start on port {port}")
            time.sleep(0.1)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        s3.create_bucket(Bucket="registry")
        yield endpoint, s3
    finally:
        process.kill()
        process.wait(timeout=10)
        log.close()


def api(server_url: str, method: str, path: str, body=None, token: str = ADMIN_TOKEN, expect: int = 200):
    status, answer = http_json(method, server_url + path, body, token=token, timeout=10)
    assert status == expect, (method, path, status, answer)
    return answer


def replicate(processes: Processes, litestream: str, machine: Path, replica_url: str) -> tuple[subprocess.Popen, str]:
    """`litestream replicate -config deploy/litestream.yml -exec "python server.py"`, as the README runs it."""
    machine.mkdir(parents=True)
    port = closed_port()
    log = machine / "litestream.log"
    process = processes.start([litestream, "replicate", "-config", str(CONFIG),
                               "-exec", f"{sys.executable} {ROOT / 'server.py'}"],
                              machine_environment(machine / "data", replica_url, port), machine, log)
    url = f"http://127.0.0.1:{port}"
    wait_for_ping(url, process, log)
    return process, url


def restore_and_start(processes: Processes, litestream: str, machine: Path, replica_url: str) -> str:
    """A fresh machine: `litestream restore` with the same config, then `python server.py`."""
    machine.mkdir(parents=True)
    port = closed_port()
    env = machine_environment(machine / "data", replica_url, port)
    database = machine / "data" / "providers.db"
    restored = subprocess.run([litestream, "restore", "-config", str(CONFIG), "-if-replica-exists", str(database)],
                              env=env, cwd=machine, capture_output=True, text=True, timeout=60)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert database.exists(), f"litestream restore wrote no database:\n{restored.stdout}{restored.stderr}"
    assert not (machine / "data" / "config_backup.json").exists()
    log = machine / "server.log"
    server = processes.start([sys.executable, str(ROOT / "server.py")], env, machine, log)
    url = f"http://127.0.0.1:{port}"
    wait_for_ping(url, server, log)
    return url


def write_everything(url: str, hook_url: str) -> dict:
    """Providers with keys (one changed, one deleted), a consumer token, a webhook: all through the API."""
    keys = {f"replicated-{i}": f"sk-replicated-{i:04d}-abcdefghijkl" for i in range(3)}
    ids = {}
    for name, key in keys.items():
        ids[name] = api(url, "POST", "/api/providers", {"name": name, "base_url": "http://127.0.0.1:9/v1",
                                                        "api_key": key, "models": ["m1"]}, expect=201)["id"]
    keys["replicated-1"] = "sk-replicated-changed-abcdefghijkl"
    api(url, "PATCH", f"/api/providers/{ids['replicated-1']}",
        {"models": ["m1", "m2"], "api_key": keys["replicated-1"]})
    api(url, "DELETE", f"/api/providers/{ids.pop('replicated-2')}", expect=204)
    keys.pop("replicated-2")
    token = api(url, "POST", "/api/tokens", {"name": "billing", "role": "consumer"}, expect=201)["token"]
    webhook = api(url, "POST", "/api/webhooks", {"url": hook_url, "events": ["provider.down"]}, expect=201)
    return {"keys": keys, "ids": ids, "token": token, "webhook_secret": webhook["secret"],
            "webhook_id": webhook["id"]}


def write_until_killed(url: str, seconds: float) -> list[tuple[int, float]]:
    """Create providers one after another for `seconds`; (id, acknowledged at) of each."""
    acknowledged = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        created = api(url, "POST", "/api/providers", {"name": f"stream-{i:05d}", "base_url": "http://127.0.0.1:9"},
                      expect=201)
        acknowledged.append((created["id"], time.monotonic()))
        i += 1
    return acknowledged


def listing(url: str) -> list[dict]:
    return api(url, "GET", "/api/providers?limit=1000")


def stable_token_fields(tokens: list[dict]) -> list[dict]:
    return [{k: t[k] for k in ("id", "name", "role", "providers", "created_at", "expires_at")} for t in tokens]


def check_recovery(litestream: str, processes: Processes, tmp_path: Path, replica_url: str,
                   webhook_receiver) -> None:
    hook_url = f"http://127.0.0.1:{webhook_receiver.server_address[1]}/hook"
    primary, primary_url = replicate(processes, litestream, tmp_path / "primary", replica_url)
    written = write_everything(primary_url, hook_url)
    time.sleep(loss_bound() + 0.5)
    providers_before = listing(primary_url)
    tokens_before = stable_token_fields(api(primary_url, "GET", "/api/tokens"))
    audit_before = api(primary_url, "GET", "/api/audit?limit=1000")["events"]
    webhooks_before = api(primary_url, "GET", "/api/webhooks")
    time.sleep(loss_bound() + 0.5)  # the reads above are audited too, and last_used_at is a write
    streamed = write_until_killed(primary_url, 1.0)
    processes.kill(primary)  # SIGKILL: Litestream and the server, right after the last acknowledgement
    killed_at = time.monotonic()
    wait_for_port_closed(int(primary_url.rsplit(":", 1)[1]))

    url = restore_and_start(processes, litestream, tmp_path / "new-machine", replica_url)

    providers_after = listing(url)
    streamed_ids = {i for i, _ in streamed}
    assert [p for p in providers_after if p["id"] not in streamed_ids] == providers_before
    for name, key in written["keys"].items():
        credentials = api(url, "GET", f"/api/providers/{written['ids'][name]}/credentials", token=written["token"])
        assert credentials["api_key"] == key
    # Every write acknowledged longer than the loss bound before the kill is there, and what is there
    # is a prefix of what was acknowledged (a restore is a point in time, not a sample).
    restored_stream = [p["id"] for p in providers_after if p["id"] in streamed_ids]
    must_have = [i for i, at in streamed if killed_at - at > loss_bound()]
    assert restored_stream == [i for i, _ in streamed][:len(restored_stream)]
    assert len(restored_stream) >= len(must_have), (
        f"{len(must_have) - len(restored_stream)} writes acknowledged more than {loss_bound():.2f} s "
        f"before the kill are missing ({len(streamed)} streamed, {len(restored_stream)} restored)")
    assert len(must_have) > 0

    assert stable_token_fields(api(url, "GET", "/api/tokens")) == tokens_before
    assert api(url, "GET", "/api/tokens/self", token=written["token"])["name"] == "billing"
    audit_after = api(url, "GET", "/api/audit?limit=1000")["events"]
    assert [e for e in audit_after if e["id"] <= audit_before[0]["id"]] == audit_before
    assert {"provider.create", "provider.update", "provider.delete", "token.create",
            "webhook.create"} <= {e["action"] for e in audit_before}
    assert api(url, "GET", "/api/webhooks") == webhooks_before

    # The webhook's secret came back under the same server secret: a ping is signed with it.
    from standardwebhooks import Webhook
    api(url, "POST", f"/api/webhooks/{written['webhook_id']}/ping")
    headers, body = webhook_receiver.RequestHandlerClass.received[-1]
    assert Webhook(written["webhook_secret"]).verify(body, {k.lower(): v for k, v in headers.items()})

    # The backup file, absent on the new machine, was written from the restored database.
    backup = json.loads((tmp_path / "new-machine" / "data" / "config_backup.json").read_text())
    export = api(url, "GET", "/api/admin/providers/export")
    assert backup["providers"] == export["providers"]
    assert [p["id"] for p in backup["providers"]] == [p["id"] for p in providers_after]


def test_file_replica_restores_everything_acknowledged_before_the_kill(tmp_path, processes, webhook_receiver):
    check_recovery(litestream_binary(), processes, tmp_path, f"file://{tmp_path / 'replica'}", webhook_receiver)


def test_s3_replica_restores_everything_acknowledged_before_the_kill(tmp_path, processes, webhook_receiver,
                                                                     s3_server):
    endpoint, s3 = s3_server
    replica_url = f"s3://registry/{tmp_path.name}?endpoint={endpoint}&region=us-east-1"
    check_recovery(litestream_binary(), processes, tmp_path, replica_url, webhook_receiver)
    assert s3.list_objects_v2(Bucket="registry", Prefix=tmp_path.name)["KeyCount"] > 0


def test_restore_without_a_replica_leaves_the_machine_empty(tmp_path):
    """`-if-replica-exists` makes a first deployment (nothing replicated yet) start afresh."""
    machine = tmp_path / "machine"
    machine.mkdir()
    env = machine_environment(machine / "data", f"file://{tmp_path / 'no-replica'}", closed_port())
    restored = subprocess.run([litestream_binary(), "restore", "-config", str(CONFIG), "-if-replica-exists",
                               str(machine / "data" / "providers.db")],
                              env=env, cwd=machine, capture_output=True, text=True, timeout=30)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert not (machine / "data" / "providers.db").exists()
