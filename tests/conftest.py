"""Fixtures (a real server on loopback, a real SQLite file, real outbound HTTP):

- `data_dir`: the temp directory the app keeps its database, secret and backup in.
- `env`: the BACKEND_* variables the app is built from (data in `data_dir`); a test adds or
  overrides some with `@pytest.mark.env(NAME="value")`.
- `runtime`: settings, the migrated SQLite database and the registry (what `server.py` opens).
- `app`: the real tornado Application; pytest-tornado's `http_server` serves it on a loopback port.
- `api`: a small JSON client for that server (`await api.post("/api/providers", json={...})`).
- `fake_provider`: a fake upstream LLM API served by Tornado on another loopback port; it records
  every request and answers as the test tells it (`fake_provider.answer("/models", status=401)`).
- `webhook_receiver`: another such fake, for webhook deliveries (`webhook_receiver.requests`
  hold their bodies and arrival times).
- `access_log`: the app's access log written to memory, line by line (`access_log()` -> lines).
- `provider_body`: a valid create body factory.
- `add_foreign_key_provider`: stores a provider whose key was encrypted under a secret the server
  does not have (as after a lost secret), written by a second registry on the same database file.
- `run_server`: starts `server.py` as a subprocess (for start-up, CLI and crash tests).
- `threaded_fake_provider`: the fake upstream on its own thread, for `server.py` subprocesses.

Shared code (in tests/support/): `api` (the JSON client, `http_json` for subprocesses),
`fake_provider` (the fake upstream, also threaded), `processes` (`run_cli`, `start_server_process`,
`closed_port`, `ROOT`, `TEST_SECRET`), `waiting` (`wait_until`, a deadline for every wait).
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from registry.config import load_settings
from registry.keyring import Keyring
from handlers import AccessLog
from server import build_service, open_runtime, uvloop
from store.database import connect
from registry.inventory import Inventory
from support.api import Api
from support.fake_provider import serve_fake_provider, start_threaded_fake_provider
from support.processes import TEST_SECRET, kill_server_process, start_server_process

# The tests' event loops (pytest-tornado makes one per test) are the kind server.py serves on.
if uvloop is not None:
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def env(request, data_dir: Path) -> dict[str, str]:
    variables = {
        "BACKEND_DATABASE_URL": f"sqlite:///{data_dir / 'providers.db'}",
        "BACKEND_BACKUP_FILE": str(data_dir / "config_backup.json"),
        "BACKEND_API_KEY_SECRET": TEST_SECRET,
        "BACKEND_REQUEST_TIMEOUT_SECONDS": "2",
    }
    for marker in reversed(list(request.node.iter_markers("env"))):
        variables.update(marker.kwargs)
    return {k: v for k, v in variables.items() if v is not None}


@pytest.fixture
def runtime(env):
    runtime = open_runtime(load_settings(env))
    yield runtime
    runtime.conn.close()


@pytest.fixture
def app(runtime, io_loop):
    service = build_service(runtime)

    async def start_delivery() -> None:  # as serve() does, on the test's running loop
        service.webhooks.delivery.start()

    io_loop.run_sync(start_delivery)
    yield service.app
    io_loop.run_sync(service.webhooks.delivery.stop)
    service.close()


@pytest.fixture
def api(http_server, http_client, base_url, env) -> Api:
    return Api(http_client, base_url, token=env.get("BACKEND_ADMIN_TOKEN"))


@pytest.fixture
def access_log(app):
    stream = io.StringIO()
    app.settings["log_function"] = AccessLog(stream, batch_lines=1)
    return lambda: stream.getvalue().splitlines()


@pytest.fixture
def provider_body():
    counter = iter(range(1, 10_000))

    def make(**fields: Any) -> dict[str, Any]:
        body = {"name": f"Provider {next(counter)}", "base_url": "https://api.example.com/v1",
                "api_key": "sk-test-0123456789abcdef", "models": ["model-a", "model-b"]}
        body.update(fields)
        return {k: v for k, v in body.items() if v is not ...}

    return make


@pytest.fixture
def add_foreign_key_provider(runtime):
    async def add(**fields: Any) -> int:
        conn = connect(runtime.settings.database_path)
        try:
            keyring = Keyring(["a secret this server does not know"])
            other = Inventory(conn, keyring, runtime.settings.backup_file)
            body = {"name": "Foreign key", "base_url": "https://foreign.example.com/v1",
                    "api_key": "sk-foreign-0123456789"}
            return await other.create({**body, **fields})
        finally:
            conn.close()

    return add


# -- a fake upstream provider and server.py subprocesses ------------------------------------------

@pytest.fixture
def fake_provider(io_loop):
    fake, stop = serve_fake_provider()
    yield fake
    stop()


@pytest.fixture
def webhook_receiver(io_loop):
    fake, stop = serve_fake_provider()
    yield fake
    stop()


@pytest.fixture
def run_server(tmp_path: Path):
    """`start(env, args=(), cwd=tmp_path)`: `server.py` as a subprocess; killed at teardown if still running."""
    started: list = []

    def start(env: dict[str, str], args: list[str] = (), cwd: Path | None = None, wait: bool = True):
        server = start_server_process(env, cwd or tmp_path, args, wait)
        started.append(server)
        return server

    yield start
    for server in started:
        kill_server_process(server)


@pytest.fixture
def threaded_fake_provider():
    """The fake upstream for `server.py` subprocesses (whose requests arrive while the test blocks)."""
    fake, stop = start_threaded_fake_provider()
    yield fake
    stop()
